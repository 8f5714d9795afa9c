"""Constants shared across the package (a leaf module)."""

from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

# Per-channel statistics of ImageNet for RGB inputs in [0, 1] (torchvision's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
