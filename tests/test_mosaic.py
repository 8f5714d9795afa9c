"""Mosaic augmentation: boxes against torchvision's crop of the canvas, the visible-share rule,
pixels, and the wiring through ``augment.mosaic``."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from hybridvision.data.mosaic import MIN_VISIBLE, MosaicDataset, mosaic
from hybridvision.data.transforms import build_preset_transforms, mosaic_off_epochs, mosaic_probability
from hybridvision.errors import UserInputError


def _part(value: float, boxes: list[list[float]], labels: list[int], s: int = 32):
    image = torch.full((3, s, s), value)
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.tensor(labels), "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
                   "image_id": int(value * 10), "orig_size": (s, s)}


def test_mosaic_pixels_and_boxes_hand_case():
    s = 32
    parts = [_part(0.1, [[20, 20, 30, 30]], [1]),   # top-left: fully inside the window
             _part(0.2, [[0, 24, 8, 32]], [2]),     # top-right: inside
             _part(0.3, [[0, 20, 4, 24]], [3]),     # bottom-left: outside (canvas x 0..4 < window x0 16)
             _part(0.4, [[10, 10, 30, 30]], [4])]   # bottom-right: 6/20 × 6/20 inside → dropped
    image, target = mosaic(parts, (s, s))  # window [16, 48)² of the 64² canvas
    assert image.shape == (3, s, s)
    assert image[0, 0, 0] == pytest.approx(0.1) and image[0, 0, -1] == pytest.approx(0.2)
    assert image[0, -1, 0] == pytest.approx(0.3) and image[0, -1, -1] == pytest.approx(0.4)
    assert torch.equal(target["labels"], torch.tensor([1, 2]))
    assert torch.allclose(target["boxes"], torch.tensor([[4.0, 4, 14, 14], [16, 8, 24, 16]]))
    assert target["image_id"] == 1 and len(target["iscrowd"]) == 2


def test_mosaic_visible_share_boundary_and_crowd_flags():
    """A box cut by the window keeps its label at >= MIN_VISIBLE of its area, with clipped
    coordinates; below it, or under 1 px on a side, it is dropped; iscrowd follows the boxes."""
    assert MIN_VISIBLE == 0.5
    s = 32
    # Window [16, 48)² of the canvas (centre (32, 32)); the top-left image's boxes are cut at x = 16.
    tl = _part(0.1, [[12, 0, 20, 4],     # above the window (y < 16): dropped
                     [6, 20, 26, 30],    # 10 of 20 px wide inside: 50 % → kept as [0, 4, 10, 14]
                     [7, 20, 27, 30],    # 11 of 20: 55 % → kept as [0, 4, 11, 14]
                     [5, 20, 25, 30],    # 9 of 20: 45 % → dropped
                     [15.5, 20, 32, 21],  # 16 of 16.5 px × 1 px inside: kept as [0, 4, 16, 5]
                     [20, 20, 20.5, 30]],  # 0.5 px wide → dropped
               [1, 2, 3, 4, 5, 6])
    tl[1]["iscrowd"] = torch.tensor([0, 1, 0, 1, 1, 0])
    empty = _part(0.2, [], [])
    image, target = mosaic([tl, empty, empty, empty], (s, s))
    assert torch.equal(target["labels"], torch.tensor([2, 3, 5]))
    assert torch.allclose(target["boxes"], torch.tensor([[0.0, 4, 10, 14], [0, 4, 11, 14], [0, 4, 16, 5]]))
    assert torch.equal(target["iscrowd"], torch.tensor([1, 0, 1]))
    assert target["labels"].dtype == torch.int64


def test_mosaic_matches_torchvision_crop_and_visible_share():
    g = torch.Generator().manual_seed(0)
    s = 40
    for _ in range(20):
        parts = []
        for k in range(4):
            xy = torch.rand(6, 2, generator=g) * s
            wh = 1 + torch.rand(6, 2, generator=g) * (s / 2)
            b = torch.cat([xy, (xy + wh).clamp(max=s)], 1)
            parts.append((torch.rand(3, s, s, generator=g), {"boxes": b, "labels": torch.arange(6) + 10 * k}))
        cx, cy = (int(v) for v in torch.randint(s // 2, s + s // 2 + 1, (2,), generator=g))
        image, target = mosaic(parts, (cx, cy))
        # Oracle: the canvas and its boxes as tv_tensors, cropped by torchvision.
        canvas = torch.zeros(3, 2 * s, 2 * s)
        boxes = []
        for k, (im, t) in enumerate(parts):
            qx, qy = (k % 2) * s, (k // 2) * s
            canvas[:, qy:qy + s, qx:qx + s] = im
            boxes.append(t["boxes"] + torch.tensor([qx, qy, qx, qy]))
        boxes = torch.cat(boxes)
        bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(2 * s, 2 * s))
        top, left = cy - s // 2, cx - s // 2
        ref_image = TF.crop(canvas, top, left, s, s)
        ref_boxes = TF.crop(bb, top, left, s, s).as_subclass(torch.Tensor)  # shifted and clamped
        area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
        wh = ref_boxes[:, 2:] - ref_boxes[:, :2]
        keep = (wh >= 1).all(1) & (wh.prod(1) >= MIN_VISIBLE * area)
        assert torch.equal(image, ref_image)
        assert torch.allclose(target["boxes"], ref_boxes[keep])
        assert torch.equal(target["labels"], torch.cat([t["labels"] for _, t in parts])[keep])


def test_mosaic_dataset_probability_and_determinism():
    data = [_part(0.1 * (i + 1), [[4, 4, 20, 20]], [i]) for i in range(5)]
    assert MosaicDataset(data, 0.0)[2][0] is data[2][0]  # p = 0: the sample itself
    torch.manual_seed(3)
    a = MosaicDataset(data, 1.0)[2]
    torch.manual_seed(3)
    b = MosaicDataset(data, 1.0)[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert a[0].unique().numel() > 1  # made of several images
    with pytest.raises(ValueError):
        MosaicDataset(data, 1.5)


def test_mosaic_dataset_closes_for_the_last_epochs():
    """``off_from_epoch``: mosaics up to the epoch before it, the samples themselves from it on."""
    data = [_part(0.1 * (i + 1), [[4, 4, 20, 20]], [i]) for i in range(5)]
    ds = MosaicDataset(data, 1.0, off_from_epoch=3)
    for epoch in range(5):
        ds.set_epoch(epoch)
        torch.manual_seed(epoch)
        image = ds[2][0]
        assert (image is data[2][0]) == (epoch >= 3), epoch
    always = MosaicDataset(data, 1.0)
    always.set_epoch(100)
    assert always[2][0] is not data[2][0]


def test_augment_mosaic_option_checked_and_needs_crop():
    assert mosaic_probability("amounts") == 0.0
    assert mosaic_probability("amounts", mosaic=0.5) == 0.5
    build_preset_transforms("amounts", True, 64, mosaic=0.5)  # accepted; the wrapper applies it
    with pytest.raises(UserInputError, match="augment.mosaic"):
        build_preset_transforms("amounts", True, 64, mosaic=2)
    with pytest.raises(UserInputError, match="crop=true"):
        build_preset_transforms("amounts", True, 64, mosaic=0.5, crop=False)
    assert mosaic_off_epochs("amounts") == 0 and mosaic_off_epochs("coco", close_mosaic=3) == 3
    build_preset_transforms("amounts", True, 64, mosaic=0.5, close_mosaic=2)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(UserInputError, match="augment.close_mosaic"):
            build_preset_transforms("amounts", True, 64, mosaic=0.5, close_mosaic=bad)


def test_detection_run_wraps_its_training_set(tiny_amounts):
    from hybridvision.config import TrainConfig
    from hybridvision.engine.tasks import make_task, small_box_warning

    data = dict(data="builtin:amounts", data_root=str(tiny_amounts),
                data_kwargs=dict(n_train=32, n_val=8, image_size=64))
    cfg = TrainConfig(model="fcos_demo", image_size=64, augment={"mosaic": 1.0}, **data)
    bundle = make_task(cfg).build_data(cfg)
    assert isinstance(bundle.train, MosaicDataset) and len(bundle.train) == 32
    torch.manual_seed(0)
    image, target = bundle.train[0]
    assert image.shape == (3, 64, 64) and target["boxes"].shape[1] == 4
    assert len(target["boxes"]) == len(target["labels"])
    # The warning reads the annotations through the wrapper (a min_side every box is under).
    warning = small_box_warning(bundle.train, 64, 64.0)
    assert warning is not None and warning == small_box_warning(bundle.train.dataset, 64, 64.0)
    assert bundle.train.off_from_epoch is None
    plain = TrainConfig(model="fcos_demo", image_size=64, **data)
    assert not isinstance(make_task(plain).build_data(plain).train, MosaicDataset)
    closing = TrainConfig(model="fcos_demo", image_size=64, epochs=10, augment={"mosaic": 0.5, "close_mosaic": 3},
                          **data)
    assert make_task(closing).build_data(closing).train.off_from_epoch == 7  # epochs 8-10 (1-based) plain


def test_mosaic_wraps_the_held_out_training_subset(tiny_amounts):
    """One COCO pair (no val pair): the wrapper draws its partners from the training subset only."""
    from torch.utils.data import Subset

    from hybridvision.config import TrainConfig
    from hybridvision.engine.tasks import make_task, small_box_warning

    train = tiny_amounts / "amounts" / "train"
    cfg = TrainConfig(model="fcos_demo", image_size=64, augment={"mosaic": 1.0},
                      data=f"coco:{train / 'annotations.json'},{train / 'images'}")
    bundle = make_task(cfg).build_data(cfg)
    assert isinstance(bundle.train, MosaicDataset) and isinstance(bundle.train.dataset, Subset)
    assert len(bundle.train) + len(bundle.val) == 32
    torch.manual_seed(1)
    image, target = bundle.train[3]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == len(target["labels"])
    warning = small_box_warning(bundle.train, 64, 64.0)
    assert warning is not None and warning == small_box_warning(bundle.train.dataset, 64, 64.0)
