"""Detection transforms on ``(image, target)`` pairs, built on ``torchvision.transforms.v2``.

Boxes travel as ``tv_tensors.BoundingBoxes`` so torchvision moves them with every geometric op
(no hand-rolled box maths here); degenerate boxes are dropped at the end by
``v2.SanitizeBoundingBoxes`` together with their labels.

Sizes (one convention for train and eval):

* **eval**: keep-aspect resize so that the *longer* side equals ``size`` (``v2.Resize(None,
  max_size=size)``); no crop, no padding — :func:`~hybridvision.data.coco.collate_detection` pads
  the batch bottom/right. A square image becomes exactly ``size × size``; boxes scale by the same
  factors (``size / W`` in x, ``size / H`` in y, up to the integer rounding of the output size).
* **train** (CenterNet recipe, Zhou et al. 2019): random scale — the longer side becomes
  ``size · s``, ``s ~ U(scale_jitter)`` (``v2.ScaleJitter``) — then, with ``crop``, a random
  ``size × size`` crop, zero-padded where the image is smaller (``v2.RandomCrop(pad_if_needed)``),
  so a batch has one shape; optional horizontal flip; optional colour jitter.

Horizontal flip is **off by default** (``hflip=0.0``): a mirrored digit or letter is not the same
class (a flipped 2 is not a 2), so it is wrong for the built-in ``amounts`` data and for text.
Turn it on for natural images (the ``coco`` preset uses 0.5, as FCOS/CenterNet do).

The target's ``image_id`` and ``orig_size`` pass through untouched: the evaluator maps predictions
back to original pixels with ``orig_size`` and the transformed image's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from hybridvision.errors import UserInputError

__all__ = [
    "TRANSFORM_PRESETS",
    "AUGMENT_OPTIONS",
    "DetectionTransforms",
    "build_detection_transforms",
    "build_preset_transforms",
    "check_augment",
]

Target = dict[str, Any]

# Per-dataset defaults. amounts: no flip (digits are not mirror-symmetric) and a milder scale range
# than COCO's, because its smallest digits are already ~10 px tall at 128².
TRANSFORM_PRESETS: dict[str, dict[str, Any]] = {
    "amounts": {"hflip": 0.0, "scale_jitter": (0.75, 1.25), "crop": True, "color_jitter": "light"},
    "coco": {"hflip": 0.5, "scale_jitter": (0.6, 1.3), "crop": True, "color_jitter": True},
}


# The ``augment`` options of a detection run (``augment.hflip=0.5`` …): what each accepts.
AUGMENT_OPTIONS: dict[str, str] = {
    "hflip": "a probability in [0, 1]",
    "scale_jitter": "null or [min, max] with 0 < min <= max",
    "crop": "true or false",
    "color_jitter": "true, false or light",
}


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_options(augment: dict[str, Any], options: dict[str, str],
                  value_ok: Callable[[str, Any], bool]) -> None:
    """UserInputError naming the first ``augment`` option not in ``options`` (name → what is
    allowed), with the valid ones, or whose value ``value_ok`` refuses."""
    for key, value in augment.items():
        if key not in options:
            raise UserInputError(f"augment.{key}: unknown option; valid: {', '.join(options)}")
        if not value_ok(key, value):
            raise UserInputError(f"augment.{key}={value!r}: not valid; use {options[key]}")


def _augment_value_ok(key: str, v: Any) -> bool:
    if key == "hflip":
        return is_number(v) and 0 <= v <= 1
    if key == "scale_jitter":
        return v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(is_number, v))
                             and 0 < v[0] <= v[1])
    if key == "crop":
        return isinstance(v, bool)
    if key == "color_jitter":
        return isinstance(v, bool) or v == "light"
    return True


def check_augment(augment: dict[str, Any]) -> None:
    """UserInputError naming the first unknown or ill-typed ``augment`` option (detection)."""
    check_options(augment, AUGMENT_OPTIONS, _augment_value_ok)


class DetectionTransforms:
    """``callable(image, target) -> (image, target)`` around a ``v2`` pipeline.

    ``image`` is a float ``[3, H, W]`` tensor, ``target["boxes"]`` a plain ``[N, 4]`` xyxy tensor;
    they are wrapped as ``tv_tensors`` for the pipeline and returned as plain tensors.
    """

    def __init__(self, pipeline: v2.Transform) -> None:
        self.pipeline = pipeline

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        boxes = tv_tensors.BoundingBoxes(
            torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4),
            format=tv_tensors.BoundingBoxFormat.XYXY,
            canvas_size=(h, w),
        )
        image, out = self.pipeline(tv_tensors.Image(image), {**target, "boxes": boxes})
        out["boxes"] = out["boxes"].as_subclass(Tensor)  # [N', 4]
        return image.as_subclass(Tensor), out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def build_detection_transforms(
    train: bool,
    size: int,
    *,
    hflip: float = 0.0,
    scale_jitter: tuple[float, float] | None = (0.6, 1.3),
    crop: bool = True,
    color_jitter: bool | str = True,
) -> DetectionTransforms:
    """Build the train or eval transform (see the module docstring for the size convention).

    Args:
        train: training pipeline (random) or eval pipeline (deterministic resize only).
        size: input size: the longer side after resizing (and the crop side in training).
        hflip: horizontal flip probability (train only). 0 by default: wrong for digits/text.
        scale_jitter: ``(min, max)`` random scale of the longer side relative to ``size``
            (train only); None resizes to ``size`` exactly.
        crop: random ``size × size`` crop (zero pad where smaller) after scaling (train only).
        color_jitter: brightness/contrast/saturation/hue jitter (train only); ``"light"``:
            brightness/contrast only.

    Returns:
        A :class:`DetectionTransforms`.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not train:
        return DetectionTransforms(v2.Compose([v2.Resize(size=None, max_size=size, antialias=True)]))
    steps: list[v2.Transform] = []
    if scale_jitter is not None:
        lo, hi = scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter must be (min, max) with 0 < min <= max, got {scale_jitter}")
        steps.append(v2.ScaleJitter(target_size=(size, size), scale_range=(float(lo), float(hi)), antialias=True))
    else:
        steps.append(v2.Resize(size=None, max_size=size, antialias=True))
    if crop:
        steps.append(v2.RandomCrop((size, size), pad_if_needed=True, fill=0))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=float(hflip)))
    if color_jitter == "light":
        # Brightness/contrast only: hue jitter costs ~4 ms per image on a CPU core and means
        # nothing for near-grey images such as the built-in digits.
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3))
    elif color_jitter:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return DetectionTransforms(v2.Compose(steps))


def build_preset_transforms(preset: str, train: bool, size: int, **overrides: Any) -> DetectionTransforms:
    """:func:`build_detection_transforms` with a dataset preset (``TRANSFORM_PRESETS``) and overrides.

    ``overrides`` are a run's ``augment`` options (:data:`AUGMENT_OPTIONS`); an unknown or
    ill-typed one raises :class:`UserInputError` naming it and what is allowed.
    """
    check_augment(overrides)
    if preset not in TRANSFORM_PRESETS:
        raise UserInputError(f"unknown transform preset '{preset}'; use one of {sorted(TRANSFORM_PRESETS)}")
    return build_detection_transforms(train, size, **{**TRANSFORM_PRESETS[preset], **overrides})
