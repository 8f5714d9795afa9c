"""Classification transforms (thesis B §3.3, after Goyal et al. / the torchvision ImageNet recipe).

Train: ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`` + horizontal flip.
Val: resize the short side to ``size · 256 / 224`` + centre crop ``size``.
Normalisation: MNIST mean/std ``(0.1307, 0.3081)`` for sketches, ImageNet statistics otherwise.

Polarity (sketches): datasets hand over black ink on white paper (TU-Berlin's PNGs, the QuickDraw
rasteriser). MNIST statistics describe *white strokes on black* (mean 0.13: mostly dark), so with
``invert=True`` (the default for sketches) the pipeline inverts first, making strokes high and
paper 0. Without it, the MNIST mean/std would push white paper to (1 − 0.13)/0.31 ≈ +2.8 and
ink to −0.42, which is not what those statistics describe. Inverting first also means anything a
geometric transform fills in (rotation corners, padding) is 0 = paper.

Input: a ``tv_tensors.Image`` / uint8 or float tensor ``[C, H, W]``, a PIL image or an HWC array.
Output: float32 ``[in_chans, size, size]``; a 1-channel sketch is repeated to 3 channels when
``in_chans=3``, an RGB image is converted to grey when ``in_chans=1``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from hybridvision.constants import IMAGENET_MEAN, IMAGENET_STD
from hybridvision.data.transforms import check_options, is_number
from hybridvision.errors import UserInputError

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_classification_transforms",
    "AUGMENT_OPTIONS",
    "check_augment",
]

# The ``augment`` options of a classification run (``augment.rotation=20`` …): what each accepts.
AUGMENT_OPTIONS: dict[str, str] = {
    "invert": "true, false or null (null: invert sketches)",
    "scale": "[min, max] with 0 < min <= max <= 1",
    "ratio": "[min, max] with 0 < min <= max",
    "hflip": "a probability in [0, 1]",
    "rotation": "degrees >= 0",
    "resize_ratio": "a number > 0",
    "mean": "a list of 1 or in_chans numbers",
    "std": "a list of 1 or in_chans numbers > 0",
}


def augment_defaults() -> dict[str, Any]:
    """The default of every :data:`AUGMENT_OPTIONS` key (``build_classification_transforms``'s)."""
    params = inspect.signature(build_classification_transforms).parameters
    return {k: params[k].default for k in AUGMENT_OPTIONS if k in params}


def _pair_ok(v: Any, hi: float = math.inf) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(is_number, v))
            and 0 < v[0] <= v[1] <= hi)


def _augment_value_ok(key: str, v: Any) -> bool:
    if key == "invert":
        return v is None or isinstance(v, bool)
    if key in ("scale", "ratio"):
        return _pair_ok(v, 1.0 if key == "scale" else math.inf)
    if key == "hflip":
        return is_number(v) and 0 <= v <= 1
    if key == "rotation":
        return is_number(v) and v >= 0
    if key == "resize_ratio":
        return is_number(v) and v > 0
    if key in ("mean", "std"):
        return (v is None or (isinstance(v, (list, tuple)) and len(v) >= 1 and all(map(is_number, v))
                              and (key == "mean" or all(x > 0 for x in v))))
    return True


def check_augment(augment: dict[str, Any]) -> None:
    """UserInputError naming the first unknown or ill-typed ``augment`` option (classification)."""
    check_options(augment, AUGMENT_OPTIONS, _augment_value_ok)

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def _stats(sketch: bool, in_chans: int) -> tuple[list[float], list[float]]:
    if sketch:
        return list(MNIST_MEAN) * in_chans, list(MNIST_STD) * in_chans
    if in_chans == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    # Grey photos: the channel average of the ImageNet statistics (as timm does for in_chans=1).
    return [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]


class _ToChannels(torch.nn.Module):
    """Repeat grey to ``n`` channels, or average RGB (luma weights) to 1; ``[C, H, W]`` float."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.grey = v2.Grayscale(num_output_channels=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[-3]
        if c == self.n:
            return img
        if c == 4:  # RGBA: drop alpha (datasets composite onto white before this)
            img, c = img[..., :3, :, :], 3
        if self.n == 1 and c == 3:
            return self.grey(img)
        if self.n == 3 and c == 1:
            return img.expand(*img.shape[:-3], 3, *img.shape[-2:]).clone()
        raise UserInputError(f"image with {c} channels: expected 1 (grey) or 3 (RGB) channels")


def build_classification_transforms(
    train: bool,
    size: int = 224,
    *,
    sketch: bool = True,
    in_chans: int = 3,
    invert: bool | None = None,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    rotation: float = 0.0,
    resize_ratio: float = 256 / 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **unknown: Any,
) -> v2.Compose:
    """The train or val pipeline of thesis B's classification recipe.

    Args:
        train: random crop + flip (+ rotation) when True, resize + centre crop when False.
        size: output side.
        sketch: MNIST statistics (and inversion); ImageNet statistics when False.
        in_chans: 1 or 3 output channels.
        invert: make ink high (``1 − x``) before anything else; default ``sketch``.
        scale, ratio: ``RandomResizedCrop`` area and aspect ranges (SBIR sketches use (0.9, 1)).
        hflip: horizontal flip probability.
        rotation: random rotation range ±degrees (train only; SBIR sketches use 20), filled with
            paper.
        resize_ratio: val short side = ``round(size · resize_ratio)`` before the centre crop.
        mean, std: override the normalisation (one value per output channel, or one for all).

    The keyword options after ``in_chans`` are a run's ``augment`` options
    (:data:`AUGMENT_OPTIONS`); an unknown or ill-typed one raises :class:`UserInputError`.

    Returns:
        ``v2.Compose``: image → float32 ``[in_chans, size, size]``, normalised.
    """
    check_augment(unknown)  # names the unknown option with the valid ones
    check_augment(dict(invert=invert, scale=scale, ratio=ratio, hflip=hflip, rotation=rotation,
                       resize_ratio=resize_ratio, mean=mean, std=std))
    if in_chans not in (1, 3):
        raise UserInputError(f"in_chans {in_chans}: use 1 (grey) or 3 (RGB)")
    if size < 1:
        raise UserInputError(f"image size {size}: use a positive size")
    invert = sketch if invert is None else invert
    m, s = _stats(sketch, in_chans)
    if mean is not None:
        m = list(mean) * (in_chans if len(mean) == 1 else 1)
    if std is not None:
        s = list(std) * (in_chans if len(std) == 1 else 1)
    if len(m) != in_chans or len(s) != in_chans:
        raise UserInputError(f"mean/std need 1 or {in_chans} values, got {len(m)} and {len(s)}")

    ops: list = [v2.ToImage()]
    if invert:
        # On the uint8/float input, before any geometric op: fills and paddings (0) are then paper.
        ops.append(v2.RandomInvert(p=1.0))
    if train:
        ops.append(v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), antialias=True))
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
    else:
        ops += [v2.Resize(int(round(size * resize_ratio)), antialias=True), v2.CenterCrop(size)]
    ops.append(v2.ToDtype(torch.float32, scale=True))  # resizing stays on uint8 (faster kernels)
    if train and rotation > 0:
        ops.append(v2.RandomRotation(rotation, fill=0.0 if invert else 1.0))  # corners = paper
    ops += [_ToChannels(in_chans), v2.Normalize(m, s)]
    return v2.Compose(ops)
