"""Bimodal (sketch, photo) data for sketch-based image retrieval (thesis B, Tables 4.3–4.4).

Data specs:

* ``builtin:bimodal`` — the generated sketches and photos of
  :mod:`hybridvision.data.builtin.bimodal` (36 classes, 9 held out for zero-shot);
* ``folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]`` — one folder per class in each modality, the
  layout of Flickr15k (``330sketches/<class>/`` and ``images/<class>/``), of TU-Berlin sketches
  (``png/<class>/<n>.png``) beside Flickr25k photos, and of Sketchy; classes are matched by folder
  name. ``UNSEEN.txt`` lists the zero-shot test classes, one name per line (``#`` comments);
  without it every class is seen. A packaged split can be named instead of a file: ``sketchy``
  (the 21 test classes of Yelamarthi et al. 2018, :data:`PACKAGED_SPLITS`). TU-Berlin's
  "extended" zero-shot splits (30 test classes) differ between papers: pass the list the paper
  you compare with used.

Pairs (stage 2) and triplets (stage 3) are drawn per epoch as in thesis B §3.x: one per sketch,
the sketch's photo partner chosen at random — half the pairs positive (same class), half
negative; a triplet's positive photo of the sketch's class and its negative of another —
seeded by ``(seed, epoch)`` so a resumed run sees the same pairs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from hybridvision.data.builtin.bimodal import ensure_bimodal
from hybridvision.data.sketch_readers import find_image_folder, load_sketch_image
from hybridvision.errors import DataError, UserInputError
from hybridvision.imageio import load_image_uint8

__all__ = ["BimodalData", "read_bimodal", "resolve_bimodal", "load_modality_image", "ImageItems", "PairEpoch",
           "TripletEpoch",
           "RetrievalItems", "collate_by_modality", "split_items"]

Items = list[tuple[str, int]]  # (image path, label)
PACKAGED_SPLITS = {"sketchy": Path(__file__).parent / "splits" / "sketchy_zeroshot.txt"}


@dataclass
class BimodalData:
    """Sketches and photos labelled into one class list; ``unseen`` are the zero-shot classes."""

    classes: list[str]
    sketches: Items
    photos: Items
    unseen: list[str] = field(default_factory=list)

    def subset(self, which: str) -> BimodalData:
        """The ``"seen"`` (training) or ``"unseen"`` (zero-shot) classes, labels renumbered 0…n−1."""
        if which not in ("seen", "unseen"):
            raise ValueError(f"subset {which!r} must be 'seen' or 'unseen'")
        keep = [c for c in self.classes if (c in self.unseen) == (which == "unseen")]
        remap = {self.classes.index(c): i for i, c in enumerate(keep)}
        pick = lambda items: [(p, remap[y]) for p, y in items if y in remap]  # noqa: E731
        return BimodalData(keep, pick(self.sketches), pick(self.photos), [])


def _read_unseen(path: Path, classes: Sequence[str]) -> list[str]:
    """The zero-shot class names of ``path`` (one a line; blank lines and ``#`` comments skipped)."""
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read the zero-shot class list ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: the zero-shot class list is not UTF-8 text (byte {e.start}); save it as UTF-8, "
                        "one class name a line") from None
    names = []
    for n, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name not in classes:
            raise DataError(f"{path} line {n}: class {name!r} has no sketch or photo folder; fix the name or "
                            "remove the line")
        names.append(name)
    return names


def read_bimodal(sketch_dir: str | os.PathLike, photo_dir: str | os.PathLike,
                 unseen_file: str | os.PathLike | None = None) -> BimodalData:
    """Two class-folder trees → :class:`BimodalData`; a class needs both sketches and photos."""
    s_items, s_classes = find_image_folder(sketch_dir)
    p_items, p_classes = find_image_folder(photo_dir)
    only_s, only_p = sorted(set(s_classes) - set(p_classes)), sorted(set(p_classes) - set(s_classes))
    if only_s or only_p:
        side = (f"{sketch_dir} has no photos for {', '.join(only_s[:3])}" if only_s
                else f"{photo_dir} has no sketches for {', '.join(only_p[:3])}")
        raise DataError(f"{side}: every class needs a folder in both trees (matched by name); "
                        "add the missing folder or remove the class")
    classes = sorted(s_classes)
    relabel = lambda items, names: [(p, classes.index(names[y])) for p, y in items]  # noqa: E731
    unseen = _read_unseen(Path(unseen_file), classes) if unseen_file else []
    return BimodalData(classes, relabel(s_items, s_classes), relabel(p_items, p_classes), unseen)


def resolve_bimodal(spec: str, root: str | os.PathLike = "data", **builtin_kwargs: Any) -> BimodalData:
    """Data spec (module docstring) → :class:`BimodalData`."""
    kind, _, rest = spec.partition(":")
    if kind == "builtin" and rest == "bimodal":
        out = Path(root) / "bimodal"
        ensure_bimodal(out, **builtin_kwargs)
        return read_bimodal(out / "sketches", out / "photos", out / "unseen_classes.txt")
    if kind == "folders":
        if builtin_kwargs:
            raise UserInputError(f"--data {spec}: data options {', '.join(sorted(builtin_kwargs))} are for "
                                 "builtin:bimodal; remove them")
        parts = [p for p in rest.split(",") if p]
        if len(parts) not in (2, 3):
            raise UserInputError(f"--data {spec}: expected folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]")
        paths = [Path(p).expanduser() for p in parts]
        if len(parts) == 3 and parts[2] in PACKAGED_SPLITS:
            paths[2] = PACKAGED_SPLITS[parts[2]]
        return read_bimodal(*paths)
    raise UserInputError(f"--data {spec}: unknown retrieval data spec; use builtin:bimodal or "
                         "folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]")


def load_modality_image(path: str | os.PathLike, modality: str) -> tv_tensors.Image:
    """A sketch as grey uint8 ``[1, H, W]`` (transparency → paper), a photo as RGB ``[3, H, W]``."""
    if modality == "sketch":
        return tv_tensors.Image(torch.from_numpy(load_sketch_image(path))[None])  # [1, H, W] uint8
    return tv_tensors.Image(load_image_uint8(path))  # [3, H, W] uint8


def _apply(transform: Callable | None, img: tv_tensors.Image) -> torch.Tensor:
    out = img.as_subclass(torch.Tensor).float().div_(255.0) if transform is None else transform(img)
    return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out


class ImageItems(Dataset):
    """``(path, label)`` items of one modality → ``(image float32 [C, H, W], label)``."""

    def __init__(self, items: Items, modality: str, transform: Callable | None = None) -> None:
        if modality not in ("sketch", "photo"):
            raise ValueError(f"modality {modality!r} must be 'sketch' or 'photo'")
        self.items, self.modality, self.transform = list(items), modality, transform
        self.targets = [y for _, y in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        return _apply(self.transform, load_modality_image(path, self.modality)), label


def _by_class(items: Items, num_classes: int) -> list[np.ndarray]:
    groups: list[list[int]] = [[] for _ in range(num_classes)]
    for i, (_, y) in enumerate(items):
        groups[y].append(i)
    return [np.asarray(g, dtype=np.int64) for g in groups]


class _EpochDraw(Dataset):
    """One sample per sketch, the photo partners drawn per epoch (:meth:`set_epoch`, which the
    trainer calls before each epoch; shared by pairs and triplets)."""

    def __init__(self, data: BimodalData, epoch: int, seed: int, sketch_tf: Callable | None,
                 photo_tf: Callable | None) -> None:
        self.sketches = ImageItems(data.sketches, "sketch", sketch_tf)
        self.photos = ImageItems(data.photos, "photo", photo_tf)
        self.sketch_labels = [y for _, y in data.sketches]
        self.photo_groups = _by_class(data.photos, len(data.classes))
        if len(self.photo_groups) < 2 or any(len(self.photo_groups[y]) == 0 for y in set(self.sketch_labels)):
            raise DataError("pairs and triplets need photos of at least two classes and of every sketch's class")
        self.seed = seed
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.rng = np.random.default_rng([self.seed, epoch])
        self._draw()

    def _draw(self) -> None:
        raise NotImplementedError

    def _photo_of(self, label: int) -> int:
        g = self.photo_groups[label]
        return int(g[self.rng.integers(len(g))])

    def _photo_not_of(self, label: int) -> int:
        others = [c for c in range(len(self.photo_groups)) if c != label and len(self.photo_groups[c])]
        return self._photo_of(others[int(self.rng.integers(len(others)))])

    def __len__(self) -> int:
        return len(self.sketches)


class PairEpoch(_EpochDraw):
    """Stage 2 (and stage 1, which ignores ``same``): ``(sketch, photo, same, sketch_label,
    photo_label)``; ``same`` is True for a random half of the sketches each epoch."""

    def __init__(self, data: BimodalData, epoch: int = 0, seed: int = 0, sketch_tf: Callable | None = None,
                 photo_tf: Callable | None = None) -> None:
        super().__init__(data, epoch, seed, sketch_tf, photo_tf)

    def _draw(self) -> None:
        n = len(self.sketches)
        self.same = np.zeros(n, dtype=bool)
        self.same[self.rng.permutation(n)[: n // 2 + n % 2]] = True
        self.partner = np.array([self._photo_of(y) if s else self._photo_not_of(y)
                                 for y, s in zip(self.sketch_labels, self.same)], dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, bool, int, int]:
        sketch, ys = self.sketches[i]
        photo, yp = self.photos[int(self.partner[i])]
        return sketch, photo, bool(self.same[i]), ys, yp


class TripletEpoch(_EpochDraw):
    """Stage 3: ``(sketch, positive photo, negative photo, sketch_label, negative_label)``."""

    def __init__(self, data: BimodalData, epoch: int = 0, seed: int = 0, sketch_tf: Callable | None = None,
                 photo_tf: Callable | None = None) -> None:
        super().__init__(data, epoch, seed, sketch_tf, photo_tf)

    def _draw(self) -> None:
        self.positive = np.array([self._photo_of(y) for y in self.sketch_labels], dtype=np.int64)
        self.negative = np.array([self._photo_not_of(y) for y in self.sketch_labels], dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        sketch, ys = self.sketches[i]
        pos, _ = self.photos[int(self.positive[i])]
        neg, yn = self.photos[int(self.negative[i])]
        return sketch, pos, neg, ys, yn


class RetrievalItems(Dataset):
    """Validation: sketch queries then photo gallery items, ``(image, label, modality)``; batch
    them with :func:`collate_by_modality`."""

    def __init__(self, sketches: ImageItems, photos: ImageItems) -> None:
        self.sketches, self.photos = sketches, photos

    def __len__(self) -> int:
        return len(self.sketches) + len(self.photos)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        n = len(self.sketches)
        return (*self.sketches[i], "sketch") if i < n else (*self.photos[i - n], "photo")


def collate_by_modality(batch: list) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``[(image, label, modality)]`` → ``{modality: (images [B_m, C_m, H, W], labels [B_m])}``."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for modality in ("sketch", "photo"):
        items = [(x, y) for x, y, m in batch if m == modality]
        if items:
            out[modality] = (torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]))
    return out


def split_items(items: Items, val_fraction: float, seed: int) -> tuple[Items, Items]:
    """Per class, a seeded ``val_fraction`` of the items (at least one when a class has two or
    more) → ``(train, val)``."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    labels = sorted({y for _, y in items})
    for c in labels:
        mine = [it for it in items if it[1] == c]
        order = rng.permutation(len(mine))
        n_val = max(1, round(len(mine) * val_fraction)) if len(mine) > 1 else 0
        val += [mine[i] for i in sorted(order[:n_val])]
        train += [mine[i] for i in sorted(order[n_val:])]
    return train, val
