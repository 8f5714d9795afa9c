"""Pure tensor functions shared by the detectors: locations and levels, post-processing, keypoint
heatmaps, Soft-NMS, corner pooling.

    from hybridvision.ops import gaussian_radius, soft_nms, corner_pool
"""

from hybridvision.ops.corner_pool import cascade_corner_pool, center_pool, corner_pool
from hybridvision.ops.heatmap import draw_gaussians, gather_at, gaussian_radius, heatmap_peaks, topk_peaks
from hybridvision.ops.soft_nms import soft_nms
from hybridvision.ops.triplets import central_region_check, central_regions

__all__ = ["gaussian_radius", "draw_gaussians", "heatmap_peaks", "topk_peaks", "gather_at", "soft_nms",
           "corner_pool", "center_pool", "cascade_corner_pool", "central_regions", "central_region_check"]
