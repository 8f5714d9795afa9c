"""Detection data: COCO datasets, transforms, converters, validation and built-in data.

Data contracts (docs/architecture.md): images float32 ``[3, H, W]`` in [0, 1]; targets
``dict(boxes=[N, 4] float32 xyxy pixels, labels=[N] int64 in 0..K-1, image_id, orig_size)``.
"""

from hybridvision.data.builtin import ensure_amounts, make_amounts, read_manifest
from hybridvision.data.coco import CocoDetection, collate_detection, load_image
from hybridvision.data.converters import montos_to_coco
from hybridvision.data.transforms import (
    TRANSFORM_PRESETS,
    DetectionTransforms,
    build_detection_transforms,
    build_preset_transforms,
)
from hybridvision.data.validate import Finding, check_coco, format_findings, raise_for_findings

__all__ = [
    "TRANSFORM_PRESETS",
    "CocoDetection",
    "DetectionTransforms",
    "Finding",
    "build_detection_transforms",
    "build_preset_transforms",
    "check_coco",
    "collate_detection",
    "ensure_amounts",
    "format_findings",
    "load_image",
    "make_amounts",
    "montos_to_coco",
    "raise_for_findings",
    "read_manifest",
]
