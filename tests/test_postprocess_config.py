"""One post-processing config (``PostProcess``) owned by the dense core: every family fills it
from its options, ``model.score_thresh`` & co. read and set it, and the merges of tiling and TTA
read it (one fallback, ``merge_iou``, for a model without its own NMS)."""

from __future__ import annotations

import pytest
import torch

from hybridvision.detectors.base import MERGE_IOU, PostProcess
from hybridvision.detectors.tta import merge_detections
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model


@pytest.mark.parametrize("name,topk_field", [("fcos_small", "topk_candidates"), ("centernet_small", "topk"),
                                             ("cornernet_small", "topk"), ("retinanet_small", "topk_candidates")])
def test_every_family_keeps_its_settings_in_one_postprocess(name, topk_field):
    model = create_model(name, score_thresh=0.2, nms_thresh=0.4, nms_method="soft_linear",
                         detections_per_img=7, **{topk_field: 33})
    assert model.postprocess == PostProcess(score_thresh=0.2, topk_candidates=33, nms_thresh=0.4,
                                            nms_method="soft_linear", detections_per_img=7)
    model.score_thresh, model.detections_per_img = 0.3, 9  # the attribute names still work
    assert (model.postprocess.score_thresh, model.postprocess.detections_per_img) == (0.3, 9)
    assert getattr(model, topk_field) == 33
    with pytest.raises(UserInputError, match=rf"{type(model).__name__} nms_method='box'"):
        model.nms_method = "box"
    with pytest.raises(UserInputError, match="nms_method='box'"):
        create_model(name, nms_method="box")


def test_merge_iou_is_the_one_fallback():
    assert PostProcess(nms_thresh=0.7).merge_iou == 0.7
    centernet = create_model("centernet_small")  # no NMS of its own
    assert centernet.nms_thresh is None and centernet.postprocess.merge_iou == MERGE_IOU


def test_tta_merge_reads_the_models_postprocess():
    model = create_model("fcos_small", num_classes=2, detections_per_img=1)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    view = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": torch.zeros(2, dtype=torch.long)}]
    assert len(merge_detections([view, view], model)[0]["boxes"]) == 1  # detections_per_img
    model.postprocess.detections_per_img = 5
    assert len(merge_detections([view, view], model)[0]["boxes"]) == 2  # duplicates merged at nms_thresh
