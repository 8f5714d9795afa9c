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

Speed (a training step on 2 CPU cores is ~0.07 s; the data must not add more than a tenth): the
train-time geometry (:class:`ScaleCropFlip`) draws its random numbers once per image and calls
the ``v2.functional`` kernels on plain tensors, which skips the per-transform dispatch of
``v2.Compose`` (pytree flattening, ``tv_tensors`` wrapping: ~2 ms of 2.2 ms per 128² image);
the light colour jitter runs on the whole batch (:func:`batch_color_jitter`, in
:func:`collate_detection_train`). Both are tested against the ``v2`` transforms they replace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from hybridvision.data.coco import collate_detection
from hybridvision.errors import UserInputError

__all__ = [
    "TRANSFORM_PRESETS",
    "AUGMENT_OPTIONS",
    "DetectionTransforms",
    "ScaleCropFlip",
    "batch_color_jitter",
    "collate_detection_train",
    "build_detection_transforms",
    "build_preset_transforms",
    "preset_train_collate",
    "mosaic_probability",
    "mosaic_off_epochs",
    "check_augment",
]

Target = dict[str, Any]

# Per-dataset defaults. amounts: no flip (digits are not mirror-symmetric) and a milder scale range
# than COCO's, because its smallest digits are already ~10 px tall at 128².
TRANSFORM_PRESETS: dict[str, dict[str, Any]] = {
    "amounts": {"hflip": 0.0, "vflip": 0.0, "rot90": 0.0, "scale_jitter": (0.75, 1.25), "crop": True,
                "color_jitter": "light", "mosaic": 0.0, "close_mosaic": 0},
    "coco": {"hflip": 0.5, "vflip": 0.0, "rot90": 0.0, "scale_jitter": (0.6, 1.3), "crop": True,
             "color_jitter": True, "mosaic": 0.0, "close_mosaic": 0},
}


# The ``augment`` options of a detection run (``augment.hflip=0.5`` …): what each accepts.
AUGMENT_OPTIONS: dict[str, str] = {
    "hflip": "a probability in [0, 1]",
    "vflip": "a probability in [0, 1]",
    "rot90": "a probability in [0, 1] (of a random quarter, half or three-quarter turn)",
    "scale_jitter": "null or [min, max] with 0 < min <= max",
    "crop": "true or false",
    "color_jitter": "true, false or light",
    "mosaic": "a probability in [0, 1] of a four-image mosaic (YOLOv4; needs crop=true)",
    "close_mosaic": "a number of epochs >= 0: no mosaic in the run's last N epochs (YOLOX)",
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
    if key in ("hflip", "vflip", "rot90", "mosaic"):
        return is_number(v) and 0 <= v <= 1
    if key == "scale_jitter":
        return v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(is_number, v))
                             and 0 < v[0] <= v[1])
    if key == "crop":
        return isinstance(v, bool)
    if key == "close_mosaic":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
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


class ScaleCropFlip:
    """Train-time geometry of one image in a few kernel calls: scale jitter, ``size × size`` crop
    with zero padding, horizontal flip; boxes follow, are clipped, and those under 1 px dropped.

    The same distribution as ``v2.ScaleJitter(target_size=(size, size), scale_range)`` →
    ``v2.RandomCrop(size, pad_if_needed=True)`` → ``v2.RandomHorizontalFlip(hflip)`` →
    ``v2.ClampBoundingBoxes`` → ``v2.SanitizeBoundingBoxes(min_size=1)``: the longer side scales
    to ``size · s``, ``s ~ U(scale_range)``; where the scaled image is smaller than ``size`` it is
    padded by the difference on both sides before the random crop (so it may sit partly outside).
    :meth:`apply` takes the drawn parameters, so a test can compare it with those transforms.
    ``color`` (optional) is a per-image transform run last on the image (full colour jitter).
    """

    def __init__(self, size: int, scale_range: tuple[float, float] | None, crop: bool, hflip: float,
                 color: Callable[[Tensor], Tensor] | None = None, vflip: float = 0.0, rot90: float = 0.0) -> None:
        self.size, self.scale_range, self.crop, self.hflip, self.color = int(size), scale_range, crop, hflip, color
        self.vflip, self.rot90 = float(vflip), float(rot90)

    def draw(self, h: int, w: int) -> dict[str, Any]:
        """Random parameters for an ``h × w`` image: scaled size, crop offsets, flip."""
        r = min(self.size / h, self.size / w)
        if self.scale_range is not None:
            lo, hi = self.scale_range
            r *= lo + float(torch.rand(())) * (hi - lo)
        nh, nw = ((max(1, int(h * r)), max(1, int(w * r))) if self.scale_range is not None
                  else _longer_side_to(h, w, self.size))  # never a side of 0 (a 4000×3 strip)
        top = left = 0
        if self.crop:  # offsets into the image padded by the shortfall on both sides
            ph, pw = nh + 2 * max(0, self.size - nh), nw + 2 * max(0, self.size - nw)
            top = int(torch.randint(0, ph - self.size + 1, ())) if ph > self.size else 0
            left = int(torch.randint(0, pw - self.size + 1, ())) if pw > self.size else 0
            top, left = top - max(0, self.size - nh), left - max(0, self.size - nw)
        flip = self.hflip > 0 and float(torch.rand(())) < self.hflip
        p = {"height": nh, "width": nw, "top": top, "left": left, "flip": flip}
        if self.vflip > 0:  # drawn only when enabled: the hflip-only random stream stays as it was
            p["vflip"] = float(torch.rand(())) < self.vflip
        if self.rot90 > 0:
            p["turns"] = int(torch.randint(1, 4, ())) if float(torch.rand(())) < self.rot90 else 0
        return p

    def apply(self, image: Tensor, boxes: Tensor, p: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``image [C, H, W]`` and ``boxes [N, 4]`` (xyxy) under the parameters ``p`` of :meth:`draw`;
        the crop window's top-left corner is ``(top, left)`` in the scaled image (negative: padding)."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        nh, nw = p["height"], p["width"]
        image = TF.resize_image(image, [nh, nw], antialias=True)
        boxes = boxes * boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
        if self.crop:
            s, top, left = self.size, p["top"], p["left"]
            out = image.new_zeros((image.shape[0], s, s))
            y0, x0 = max(0, top), max(0, left)  # the part of the scaled image inside the window
            y1, x1 = min(nh, top + s), min(nw, left + s)
            out[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
            image = out
            boxes = boxes - boxes.new_tensor([left, top, left, top])
        oh, ow = int(image.shape[-2]), int(image.shape[-1])
        if p["flip"]:
            image = image.flip(-1)
            boxes = torch.stack([ow - boxes[:, 2], boxes[:, 1], ow - boxes[:, 0], boxes[:, 3]], dim=1)
        if p.get("vflip"):
            image = image.flip(-2)
            boxes = torch.stack([boxes[:, 0], oh - boxes[:, 3], boxes[:, 2], oh - boxes[:, 1]], dim=1)
        for _ in range(p.get("turns", 0)):  # a quarter turn counter-clockwise (torch.rot90, k=1)
            image = torch.rot90(image, 1, dims=(-2, -1))
            boxes = torch.stack([boxes[:, 1], ow - boxes[:, 2], boxes[:, 3], ow - boxes[:, 0]], dim=1)
            oh, ow = ow, oh
        boxes = torch.stack([boxes[:, 0].clamp(0, ow), boxes[:, 1].clamp(0, oh),
                             boxes[:, 2].clamp(0, ow), boxes[:, 3].clamp(0, oh)], dim=1)
        return image, boxes

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        image, boxes = self.apply(image, boxes, self.draw(int(image.shape[-2]), int(image.shape[-1])))
        if self.color is not None:
            image = self.color(image)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= 1).all(dim=1) & (wh.prod(dim=1) >= 1)  # SanitizeBoundingBoxes(min_size=1, min_area=1)
        out = {k: v for k, v in target.items() if k != "area"}  # a pre-transform area would be stale
        out["boxes"] = boxes[keep]
        for key in ("labels", "iscrowd"):
            if key in target and torch.is_tensor(target[key]) and len(target[key]) == len(keep):
                out[key] = target[key][keep]
        return image, out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, scale_range={self.scale_range}, crop={self.crop}, "
                f"hflip={self.hflip}, vflip={self.vflip}, rot90={self.rot90}, color={self.color})")


def _longer_side_to(h: int, w: int, size: int) -> tuple[int, int]:
    """The size ``v2.Resize(None, max_size=size)`` gives an ``h × w`` image (longer side ``size``),
    but never a side of 0 (torchvision's gives a 4000×3 image at 128 a height of 0, and fails)."""
    if w <= h:
        return size, max(1, int(size * w / h))
    return max(1, int(size * h / w)), size


class LongerSideResize(v2.Resize):
    """``v2.Resize(None, max_size=size)`` (the eval resize: longer side ``size``, aspect kept) that
    keeps at least 1 px on the shorter side, so an extreme aspect ratio (a 4000×3 strip) resizes."""

    def __init__(self, size: int) -> None:
        super().__init__(size=None, max_size=int(size), antialias=True)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        h, w = TF.get_size(inpt)  # the image's size, or the boxes' canvas (the same)
        return self._call_kernel(TF.resize, inpt, list(_longer_side_to(h, w, self.max_size)), antialias=True)


LIGHT_JITTER = {"brightness": 0.3, "contrast": 0.3}


def batch_color_jitter(images: Tensor, brightness: float = 0.3, contrast: float = 0.3,
                       factors: Tensor | None = None) -> Tensor:
    """Brightness and contrast jitter of a float batch ``[B, 3, H, W]`` in [0, 1], each image with
    its own factors and order, as ``v2.ColorJitter(brightness, contrast)`` does image by image.

    ``factors`` ``[B, 3]``: brightness, contrast and order (< 0.5: brightness first) per image;
    drawn from ``U(1 ± brightness)``, ``U(1 ± contrast)`` and ``U(0, 1)`` when not given.
    Brightness scales the image; contrast blends it with the mean of its grey image
    (``v2.functional.adjust_brightness`` / ``adjust_contrast``); the result is clipped to [0, 1].
    """
    b = images.shape[0]
    if factors is None:
        u = torch.rand(b, 3)
        factors = torch.stack([1 - brightness + 2 * brightness * u[:, 0],
                               1 - contrast + 2 * contrast * u[:, 1], u[:, 2]], dim=1)
    factors = factors.to(images)
    out = torch.empty_like(images)
    first = factors[:, 2] < 0.5  # brightness first
    for idx, order in ((first.nonzero()[:, 0], (_brightness, _contrast)),
                       ((~first).nonzero()[:, 0], (_contrast, _brightness))):
        if len(idx):
            x = images[idx]
            for op in order:
                x = op(x, factors[idx])
            out[idx] = x
    return out


def _brightness(x: Tensor, factors: Tensor) -> Tensor:
    """``v2.functional.adjust_brightness`` per image of a float batch (factors ``[B, 3]``, column 0)."""
    return (x * factors[:, 0].view(-1, 1, 1, 1)).clamp_(0, 1)


def _contrast(x: Tensor, factors: Tensor) -> Tensor:
    """``v2.functional.adjust_contrast`` per image: blend with the mean of its grey image (column 1)."""
    c = factors[:, 1].view(-1, 1, 1, 1)
    grey = TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x
    mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
    return (c * x + (1 - c) * mean).clamp_(0, 1)


def collate_detection_train(batch: Any, size_divisible: int = 32) -> tuple[Tensor, list[Target], list[tuple[int, int]]]:
    """:func:`~hybridvision.data.coco.collate_detection`, then the light colour jitter on the batch
    (on the images' own pixels: padding stays 0 and does not enter the contrast mean)."""
    shapes = {tuple(image.shape) for image, _ in batch}
    if len(shapes) > 1:  # mixed sizes (no crop): jitter each image before padding, as per image
        batch = [(batch_color_jitter(image[None], **LIGHT_JITTER)[0], t) for image, t in batch]
        return collate_detection(batch, size_divisible)
    images, targets, sizes = collate_detection(batch, size_divisible)
    if images.shape[-2:] != batch[0][0].shape[-2:]:  # padded to the stride: jitter the images only
        h, w = batch[0][0].shape[-2:]
        images[:, :, :h, :w] = batch_color_jitter(images[:, :, :h, :w], **LIGHT_JITTER)
        return images, targets, sizes
    return batch_color_jitter(images, **LIGHT_JITTER), targets, sizes


def build_detection_transforms(
    train: bool,
    size: int,
    *,
    hflip: float = 0.0,
    scale_jitter: tuple[float, float] | None = (0.6, 1.3),
    crop: bool = True,
    color_jitter: bool | str = True,
    fast: bool = True,
    vflip: float = 0.0,
    rot90: float = 0.0,
) -> DetectionTransforms | ScaleCropFlip:
    """Build the train or eval transform (see the module docstring for the size convention).

    Args:
        train: training pipeline (random) or eval pipeline (deterministic resize only).
        size: input size: the longer side after resizing (and the crop side in training).
        hflip: horizontal flip probability (train only). 0 by default: wrong for digits/text.
        vflip: vertical flip probability (train only; aerial and microscope images).
        rot90: probability of a random quarter, half or three-quarter turn (train only; with
            ``crop`` the image is square, so boxes stay upright rectangles).
        scale_jitter: ``(min, max)`` random scale of the longer side relative to ``size``
            (train only); None resizes to ``size`` exactly.
        crop: random ``size × size`` crop (zero pad where smaller) after scaling (train only).
        color_jitter: brightness/contrast/saturation/hue jitter (train only); ``"light"``:
            brightness/contrast only — with ``fast``, left to the batch (:func:`collate_detection_train`).
        fast: the train geometry as :class:`ScaleCropFlip` (default); False: the ``v2.Compose``
            of the same transforms, with the colour jitter per image.

    Returns:
        A :class:`DetectionTransforms`.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not train:
        return DetectionTransforms(v2.Compose([LongerSideResize(size)]))
    if scale_jitter is not None and not 0 < scale_jitter[0] <= scale_jitter[1]:
        raise ValueError(f"scale_jitter must be (min, max) with 0 < min <= max, got {scale_jitter}")
    if fast:
        color = (v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02)
                 if color_jitter is True else None)  # "light" runs on the batch (collate_detection_train)
        return ScaleCropFlip(size, None if scale_jitter is None else (float(scale_jitter[0]), float(scale_jitter[1])),
                             crop, float(hflip), color, vflip=float(vflip), rot90=float(rot90))
    steps: list[v2.Transform] = []
    if scale_jitter is not None:
        lo, hi = scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter must be (min, max) with 0 < min <= max, got {scale_jitter}")
        steps.append(v2.ScaleJitter(target_size=(size, size), scale_range=(float(lo), float(hi)), antialias=True))
    else:
        steps.append(LongerSideResize(size))
    if crop:
        steps.append(v2.RandomCrop((size, size), pad_if_needed=True, fill=0))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=float(hflip)))
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=float(vflip)))
    if rot90 > 0:
        turns = [v2.RandomRotation((a, a), expand=True) for a in (90, 180, 270)]
        steps.append(v2.RandomApply([v2.RandomChoice(turns)], p=float(rot90)))
    if color_jitter == "light":
        # Brightness/contrast only: hue jitter costs ~4 ms per image on a CPU core and means
        # nothing for near-grey images such as the built-in digits.
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3))
    elif color_jitter:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return DetectionTransforms(v2.Compose(steps))


def build_preset_transforms(preset: str, train: bool, size: int,
                            **overrides: Any) -> DetectionTransforms | ScaleCropFlip:
    """:func:`build_detection_transforms` with a dataset preset (``TRANSFORM_PRESETS``) and overrides.

    ``overrides`` are a run's ``augment`` options (:data:`AUGMENT_OPTIONS`); an unknown or
    ill-typed one raises :class:`UserInputError` naming it and what is allowed.
    """
    check_augment(overrides)
    if preset not in TRANSFORM_PRESETS:
        raise UserInputError(f"unknown transform preset '{preset}'; use one of {sorted(TRANSFORM_PRESETS)}")
    options = {**TRANSFORM_PRESETS[preset], **overrides}
    options.pop("close_mosaic", None)
    if options.pop("mosaic", 0) and not options.get("crop"):
        raise UserInputError("augment.mosaic needs augment.crop=true: a mosaic joins four square crops")
    return build_detection_transforms(train, size, **options)


def mosaic_probability(preset: str, **overrides: Any) -> float:
    """The ``augment.mosaic`` probability of a run (the preset's default unless overridden); the
    dataset wrapper :class:`~hybridvision.data.mosaic.MosaicDataset` applies it."""
    return float({**TRANSFORM_PRESETS[preset], **overrides}.get("mosaic", 0.0))


def mosaic_off_epochs(preset: str, **overrides: Any) -> int:
    """``augment.close_mosaic``: how many of a run's last epochs train without mosaics."""
    return int({**TRANSFORM_PRESETS[preset], **overrides}.get("close_mosaic", 0))


def preset_train_collate(preset: str, **overrides: Any) -> Callable[..., Any]:
    """The training collate function that goes with :func:`build_preset_transforms` (train):
    :func:`collate_detection_train` when the light colour jitter is left to the batch."""
    options = {**TRANSFORM_PRESETS[preset], **overrides}
    return collate_detection_train if options.get("color_jitter") == "light" else collate_detection
