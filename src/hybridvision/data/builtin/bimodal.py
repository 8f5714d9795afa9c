"""Built-in ``bimodal`` retrieval data: sketches and rendered "photos" of the built-in sketch classes.

A stand-in for Flickr15k / Flickr25k + TU-Berlin (sketch-based image retrieval, thesis B) that
needs no download. For each of the 36 classes of :mod:`hybridvision.data.builtin.sketches`:

* sketches: drawings of the class (:func:`~hybridvision.data.builtin.sketches.draw_sketch`),
  rasterised black on white (the real TU-Berlin look);
* photos: other drawings of the class rendered as an object in a scene — closed strokes filled
  with a colour and a texture (stripes, dots or noise), every stroke outlined thick in a darker
  shade, placed at a random position, size and rotation on a cluttered background (a colour
  gradient, 3–8 random shapes, pixel noise). Nothing but the shape tells the class.

Layout (Flickr15k's: one folder per class in each modality)::

    ROOT/sketches/<class>/<n>.png   grey
    ROOT/photos/<class>/<n>.png     RGB
    ROOT/unseen_classes.txt         the zero-shot classes (never trained on), one per line
    ROOT/manifest.json              written last: a folder with it is complete; it records the
                                    SHA-256 of every file, so a regeneration never replaces a
                                    file the user added or changed (builtin/generated.py)

The zero-shot split holds out every fourth class in alphabetical order (9 of 36). Deterministic
by seed and prefix-stable per class (the first n images do not depend on the counts asked).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import numpy as np
from PIL import Image, ImageDraw

from hybridvision.data.builtin.sketches import SKETCH_CLASSES, draw_sketch
from hybridvision.data.sketch_raster import rasterize_strokes
from hybridvision.errors import DataError
from hybridvision.data.builtin.generated import GeneratedSet, write_manifest
from hybridvision.fileio import atomic_replace_dir
from hybridvision.options import PositiveGeneratedCount

__all__ = ["BIMODAL_CLASSES", "UNSEEN_CLASSES", "render_photo", "make_bimodal", "ensure_bimodal"]

VERSION = 1
BIMODAL_CLASSES: tuple[str, ...] = SKETCH_CLASSES
UNSEEN_CLASSES: tuple[str, ...] = BIMODAL_CLASSES[3::4]  # 9 zero-shot classes
DEFAULT_SKETCHES, DEFAULT_PHOTOS, DEFAULT_SIZE = 40, 60, 96


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour gradient with 3–8 random shapes on it."""
    a, b = np.array(_colour(rng, 60, 230), float), np.array(_colour(rng, 60, 230), float)
    t = np.linspace(0, 1, size)[:, None, None]  # [S, 1, 1]
    grad = (a * (1 - t) + b * t) * np.ones((1, size, 1))  # [S, S, 3]
    if rng.random() < 0.5:
        grad = grad.transpose(1, 0, 2)
    img = Image.fromarray(grad.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.5, 2) * size
        box = (x0, y0, x0 + w, y0 + h)
        fill = _colour(rng, 40, 220)
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.line(box, fill=fill, width=int(rng.integers(1, 4)))
    return img


def _texture(rng: np.random.Generator, size: int, colour: tuple[int, int, int]) -> Image.Image:
    """An object texture: stripes, dots or noise around ``colour``."""
    base = np.array(colour, float)
    yy, xx = np.mgrid[0:size, 0:size]
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle
        ang, period = rng.uniform(0, np.pi), rng.uniform(4, 10)
        m = (np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period) > 0)[..., None]
        tex = np.where(m, base, base * 0.6)
    elif kind == 1:  # dots
        period = rng.uniform(5, 10)
        m = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2 < (period / 4) ** 2)[..., None]
        tex = np.where(m, base * 0.5, base)
    else:  # noise
        tex = base + rng.normal(0, 25, (size, size, 1))
    return Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8), "RGB")


def render_photo(name: str, rng: np.random.Generator, size: int = DEFAULT_SIZE) -> np.ndarray:
    """A "photo" of class ``name``: uint8 ``[size, size, 3]`` (see the module docstring)."""
    drawing, _ = draw_sketch(name, rng)  # strokes in QuickDraw's 0–255 canvas
    strokes = [np.array(s, dtype=np.float64).T for s in drawing]  # each [P, 2]
    pts = np.concatenate(strokes)
    centre = (pts.max(0) + pts.min(0)) / 2
    extent = max(float((pts.max(0) - pts.min(0)).max()), 1.0)
    scale = rng.uniform(0.45, 0.8) * size / extent
    angle = rng.normal(0, 0.2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    room = size * (1 - scale * extent / size) / 2
    offset = size / 2 + rng.uniform(-room, room, 2) * 0.8
    placed = [(s - centre) @ rot.T * scale + offset for s in strokes]

    img = _background(rng, size)
    fill = _colour(rng, 30, 256)
    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    for s in placed:  # closed strokes are filled
        if len(s) >= 3 and np.hypot(*(s[0] - s[-1])) < 0.15 * scale * extent:
            mask_draw.polygon([tuple(p) for p in s.tolist()], fill=255)
    img.paste(_texture(rng, size, fill), (0, 0), mask)
    draw = ImageDraw.Draw(img)
    outline = tuple(int(v * 0.35) for v in fill)
    width = max(2, round(size / 32))
    for s in placed:
        if len(s) > 1:
            draw.line([tuple(p) for p in s.tolist()], fill=outline, width=width, joint="curve")
    out = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, (size, size, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def _render_sketch(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    drawing, _ = draw_sketch(name, rng)
    return rasterize_strokes(drawing, size, center=True)  # uint8 [size, size], ink 0 on 255


def _class_images(name: str, kind: str, n: int, seed: int, size: int) -> list[np.ndarray]:
    # One generator per (seed, class, modality) consumed in order: prefix-stable.
    rng = np.random.default_rng([seed, zlib.crc32(f"{kind}/{name}".encode())])
    render = render_photo if kind == "photos" else _render_sketch
    return [render(name, rng, size) for _ in range(n)]


def _listed_files(manifest: dict[str, Any]) -> list[Any]:
    """The manifest's ``files``: the list of every file a generation wrote."""
    if not isinstance(manifest["files"], list):
        raise TypeError("files is not a list")
    return manifest["files"]


# The one manifest rule of every generated set (generated.py), told how bimodal lists its files.
BIMODAL = GeneratedSet("bimodal", owns=lambda m: m.get("name") == "bimodal", files=_listed_files)


def make_bimodal(out_dir: str | os.PathLike, *, sketches: int = DEFAULT_SKETCHES, photos: int = DEFAULT_PHOTOS,
                 size: int = DEFAULT_SIZE, seed: int = 0) -> dict[str, Any]:
    """Generate the built-in bimodal data into ``out_dir`` (atomically; an earlier generation is
    replaced, any other non-empty folder refused) → its manifest."""
    if sketches < 1 or photos < 1 or size < 16:
        raise DataError(f"bimodal sketches={sketches} photos={photos} size={size}: use at least 1 image "
                        "per class of each modality and size >= 16")
    out = Path(out_dir)
    BIMODAL.check_replaceable(out, fix=f"move it out, choose another folder (--out; data_root when training), or "
                                       f"delete {out} to regenerate it")

    def fill(tmp: Path) -> dict[str, Any]:
        files = ["unseen_classes.txt"]
        for kind, n in (("sketches", sketches), ("photos", photos)):
            for name in BIMODAL_CLASSES:
                folder = tmp / kind / name
                folder.mkdir(parents=True)
                for i, arr in enumerate(_class_images(name, kind, n, seed, size)):
                    Image.fromarray(arr).save(folder / f"{i:04d}.png", optimize=False)
                    files.append(f"{kind}/{name}/{i:04d}.png")
        (tmp / "unseen_classes.txt").write_text("\n".join(UNSEEN_CLASSES) + "\n")
        manifest = {"name": "bimodal", "version": VERSION, "generator": __name__, "seed": seed, "size": size,
                    "sketches_per_class": sketches, "photos_per_class": photos,
                    "classes": list(BIMODAL_CLASSES), "unseen_classes": list(UNSEEN_CLASSES), "files": files}
        return write_manifest(tmp, manifest)  # every file's SHA-256, the manifest last: complete

    return atomic_replace_dir(out, fill, is_ours=BIMODAL.is_ours)


def ensure_bimodal(root: str | os.PathLike, *, sketches: PositiveGeneratedCount = DEFAULT_SKETCHES,
                   photos: PositiveGeneratedCount = DEFAULT_PHOTOS, size: Annotated[int, at.Ge(16)] = DEFAULT_SIZE,
                   seed: int = 0) -> dict[str, Any]:
    """Reuse ``root`` when it holds a complete generation with exactly these settings and every
    file it wrote; otherwise (re)generate it. Exactly: the SBIR reader takes every sketch and photo
    of the folders, so a generation with more per class would train on more than was asked for."""
    m = BIMODAL.reusable(root, lambda m: m.get("version") == VERSION and m.get("seed") == seed
                         and m.get("size") == size and m.get("sketches_per_class") == sketches
                         and m.get("photos_per_class") == photos)
    return m if m is not None else make_bimodal(root, sketches=sketches, photos=photos, size=size, seed=seed)
