"""The fast training augmentation equals the torchvision ``v2`` transforms it replaces.

Oracles: ``ScaleCropFlip.apply`` against ``v2.functional`` resize → pad → crop → flip on
``tv_tensors`` (image and boxes), for the same drawn parameters; ``batch_color_jitter`` against
``v2.functional.adjust_brightness`` / ``adjust_contrast`` image by image.
"""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from hybridvision.data.coco import collate_detection
from hybridvision.data.transforms import (ScaleCropFlip, batch_color_jitter, build_detection_transforms,
                                          collate_detection_train, preset_train_collate)


def reference(image, boxes, p, size, crop=True):
    """The same geometry through torchvision's v2 kernels on tv_tensors."""
    h, w = image.shape[-2:]
    bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
    img = F.resize(tv_tensors.Image(image), [p["height"], p["width"]], antialias=True)
    bb = F.resize(bb, [p["height"], p["width"]])
    if crop:
        nh, nw = p["height"], p["width"]
        dy, dx = max(0, size - nh), max(0, size - nw)
        img = F.pad(img, [dx, dy, dx, dy], fill=0)
        bb = F.pad(bb, [dx, dy, dx, dy])
        img = F.crop(img, p["top"] + dy, p["left"] + dx, size, size)
        bb = F.crop(bb, p["top"] + dy, p["left"] + dx, size, size)
    if p["flip"]:
        img, bb = F.horizontal_flip(img), F.horizontal_flip(bb)
    if p.get("vflip"):
        img, bb = F.vertical_flip(img), F.vertical_flip(bb)
    if p.get("turns"):
        angle = 90 * p["turns"]  # torchvision: positive angles turn counter-clockwise
        img, bb = F.rotate(img, angle, expand=True), F.rotate(bb, angle, expand=True)
    bb = F.clamp_bounding_boxes(bb)
    return img.as_subclass(torch.Tensor), bb.as_subclass(torch.Tensor)


@pytest.mark.parametrize("shape", [(96, 128), (128, 128), (200, 150)])
@pytest.mark.parametrize("seed", range(4))
def test_scale_crop_flip_equals_v2_kernels(shape, seed):
    torch.manual_seed(seed)
    h, w = shape
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    xy = torch.rand(6, 2) * torch.tensor([w - 20, h - 20])
    boxes = torch.cat([xy, xy + 5 + torch.rand(6, 2) * 15], dim=1)
    t = ScaleCropFlip(128, (0.5, 1.5), crop=True, hflip=0.5)
    p = t.draw(h, w)
    got_img, got_boxes = t.apply(image, boxes, p)
    ref_img, ref_boxes = reference(image, boxes, p, 128)
    assert got_img.shape == (3, 128, 128)
    assert torch.equal(got_img, ref_img)
    torch.testing.assert_close(got_boxes, ref_boxes, atol=1e-4, rtol=0)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("vflip", [False, True])
def test_vertical_flip_and_quarter_turns_equal_v2_kernels(turns, vflip):
    torch.manual_seed(turns)
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    xy = torch.rand(5, 2) * torch.tensor([100, 70])
    boxes = torch.cat([xy, xy + 5 + torch.rand(5, 2) * 15], dim=1)
    t = ScaleCropFlip(96, (0.8, 1.2), crop=True, hflip=0.5, vflip=0.5, rot90=0.5)
    p = {**t.draw(90, 120), "vflip": vflip, "turns": turns}
    got_img, got_boxes = t.apply(image, boxes, p)
    ref_img, ref_boxes = reference(image, boxes, p, 96)
    assert torch.equal(got_img, ref_img)
    torch.testing.assert_close(got_boxes, ref_boxes, atol=1e-4, rtol=0)


def test_turns_and_vertical_flips_are_drawn_at_their_rates():
    torch.manual_seed(0)
    t = ScaleCropFlip(64, None, crop=True, hflip=0.0, vflip=0.25, rot90=0.5)
    ps = [t.draw(64, 64) for _ in range(2000)]
    assert abs(sum(p["vflip"] for p in ps) / 2000 - 0.25) < 0.04
    turned = [p["turns"] for p in ps if p["turns"]]
    assert abs(len(turned) / 2000 - 0.5) < 0.04 and set(turned) == {1, 2, 3}
    plain = ScaleCropFlip(64, None, crop=True, hflip=0.0).draw(64, 64)
    assert "vflip" not in plain and "turns" not in plain  # the default draw is unchanged


def test_draw_follows_scale_jitter_and_random_crop():
    """Scaled sizes span the scale range of the longer side; crop offsets stay in v2's bounds."""
    torch.manual_seed(0)
    t = ScaleCropFlip(100, (0.5, 1.5), crop=True, hflip=0.0)
    ps = [t.draw(100, 100) for _ in range(400)]
    sides = torch.tensor([p["height"] for p in ps], dtype=torch.float32)
    assert 50 <= sides.min() < 55 and 145 < sides.max() <= 150
    for p in ps:
        d = max(0, 100 - p["height"])
        assert -d <= p["top"] <= max(0, p["height"] - 100)  # v2: the window never leaves the padded image
        assert not p["flip"]
    # the offsets follow v2.RandomCrop(pad_if_needed) drawn on the same scaled size
    small = ScaleCropFlip(100, (0.5, 0.9), crop=True, hflip=0.0)  # always scaled below 100: padded
    torch.manual_seed(1)
    ours = [small.draw(60, 60)["top"] for _ in range(2000)]
    crop = v2.RandomCrop(100, pad_if_needed=True)
    v2_tops = []
    for _ in range(2000):
        side = small.draw(60, 60)["height"]
        params = crop.make_params([torch.zeros(1, side, side)])
        v2_tops.append(params["top"] - params["padding"][1])  # window top in the scaled image
    assert min(ours) == pytest.approx(min(v2_tops), abs=3) and max(ours) == max(v2_tops) == 0
    assert sum(ours) / len(ours) == pytest.approx(sum(v2_tops) / len(v2_tops), abs=2.0)


def test_boxes_outside_the_crop_are_dropped_with_their_labels():
    t = ScaleCropFlip(64, None, crop=True, hflip=0.0)
    image = torch.zeros(3, 128, 128, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [100.0, 100.0, 120.0, 120.0]]),
              "labels": torch.tensor([3, 7]), "image_id": 5}
    torch.manual_seed(0)
    out_img, out = t(image, target)  # resized to 64², nothing cropped: both kept, halved
    assert out_img.shape == (3, 64, 64)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]))
    p = {"height": 128, "width": 128, "top": 0, "left": 0, "flip": False}  # keep the top-left 64²
    img2, boxes2 = ScaleCropFlip(64, (1.0, 1.0), crop=True, hflip=0.0).apply(image, target["boxes"], p)
    wh = boxes2[:, 2:] - boxes2[:, :2]
    assert (wh >= 1).all(dim=1).tolist() == [True, False]  # the second box lies outside the window
    t2 = ScaleCropFlip(64, (1.0, 1.0), crop=True, hflip=0.0)
    t2.draw = lambda h, w: p  # type: ignore[method-assign]
    _, out2 = t2(image, target)
    assert out2["labels"].tolist() == [3] and out2["image_id"] == 5


@pytest.mark.parametrize("seed", range(3))
def test_batch_color_jitter_equals_v2_per_image(seed):
    torch.manual_seed(seed)
    images = torch.rand(5, 3, 32, 40)
    factors = torch.tensor([[0.8, 1.2, 0.1], [1.3, 0.7, 0.9], [1.0, 1.0, 0.3], [0.7, 1.3, 0.6], [1.1, 0.9, 0.49]])
    got = batch_color_jitter(images, factors=factors)
    for i in range(5):
        b, c, order = factors[i].tolist()
        x = images[i]
        if order < 0.5:
            ref = F.adjust_contrast(F.adjust_brightness(x, b), c)
        else:
            ref = F.adjust_brightness(F.adjust_contrast(x, c), b)
        torch.testing.assert_close(got[i], ref, atol=1e-6, rtol=0)


def test_batch_color_jitter_draws_factors_in_range():
    torch.manual_seed(0)
    x = torch.full((400, 3, 4, 4), 0.5)
    y = batch_color_jitter(x, brightness=0.3, contrast=0.3)  # a flat grey image: contrast is a no-op
    ratio = y[:, 0, 0, 0] / 0.5
    assert 0.7 <= ratio.min() < 0.75 and 1.25 < ratio.max() <= 1.3


def test_light_jitter_moves_to_the_batch():
    assert preset_train_collate("amounts") is collate_detection_train
    assert preset_train_collate("amounts", color_jitter=False) is collate_detection
    assert preset_train_collate("coco") is collate_detection  # full jitter stays per image
    fast = build_detection_transforms(True, 64, color_jitter="light")
    assert isinstance(fast, ScaleCropFlip) and fast.color is None
    full = build_detection_transforms(True, 64, color_jitter=True)
    assert isinstance(full.color, v2.ColorJitter)
    slow = build_detection_transforms(True, 64, fast=False)
    assert not isinstance(slow, ScaleCropFlip)


def test_padded_or_mixed_batches_jitter_only_image_pixels():
    """Without a crop, images differ in size: padding stays 0 and the contrast mean is the image's own."""
    torch.manual_seed(0)
    a, b = torch.rand(3, 40, 60), torch.rand(3, 64, 64)
    tgt = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    images, _, sizes = collate_detection_train([(a, tgt), (b, tgt)])
    assert sizes == [(40, 60), (64, 64)]
    assert images[0, :, 40:, :].abs().sum() == 0 and images[0, :, :, 60:].abs().sum() == 0
    torch.manual_seed(0)
    images, _, _ = collate_detection_train([(a, tgt), (a.clone(), tgt)])  # same size, padded to 64
    assert images.shape[-2:] == (64, 64) and images[:, :, 40:, :].abs().sum() == 0


def test_train_help_lists_every_augment_option_with_its_default(cli):
    from hybridvision.data.classification_transforms import AUGMENT_OPTIONS as CLS
    from hybridvision.data.transforms import AUGMENT_OPTIONS as DET

    code, out, _ = cli("train", "--help")
    text = " ".join(out.split())
    assert code == 0
    for key in [*DET, *CLS]:
        assert f"augment.{key}:" in text
    assert "augment.vflip: a probability in [0, 1] (default 0.0 / 0.0)" in text
