"""Pure tensor functions shared by the detectors: locations and levels, post-processing, keypoint
heatmaps, Soft-NMS.

    from hybridvision.ops import gaussian_radius, soft_nms
"""

from hybridvision.ops.heatmap import draw_gaussians, gather_at, gaussian_radius, heatmap_peaks, topk_peaks
from hybridvision.ops.soft_nms import soft_nms

__all__ = ["gaussian_radius", "draw_gaussians", "heatmap_peaks", "topk_peaks", "gather_at", "soft_nms"]
