"""Test-time augmentation (detectors/tta.py) for every detector family.

Oracle: a mirror-symmetric scene whose "model output" is the perfect prediction
(``encode_targets``) — the flip view then predicts the same scene, so flip TTA must equal the
plain decode exactly, whether it merges boxes (FCOS, RetinaNet) or heatmaps (CenterNet)."""

from __future__ import annotations

import pytest
import torch

from hybridvision.detectors.tta import flip_images, predict_tta
from hybridvision.factory import create_model

FAMILIES = ["fcos_small", "retinanet_small", "centernet_small"]
H, W = 96, 128


def _symmetric_targets() -> list[dict[str, torch.Tensor]]:
    # Mirror pairs about x = W/2 = 64; centres at 4j + 2 px, so CenterNet's stride-4 cells mirror too.
    boxes = torch.tensor([[10.0, 20, 34, 50], [94, 20, 118, 50], [40, 60, 60, 90], [68, 60, 88, 90]])
    return [dict(boxes=boxes, labels=torch.tensor([0, 0, 2, 2]))]


def _sorted(det: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = sorted(range(len(det["boxes"])), key=lambda i: tuple(det["boxes"][i].tolist()))
    return det["boxes"][order], det["scores"][order], det["labels"][order]


def test_flip_images_mirrors_inside_each_width():
    images = torch.rand(2, 3, 8, 10)
    sizes = [(8, 10), (6, 7)]
    flipped = flip_images(images, sizes)
    torch.testing.assert_close(flipped[0], images[0].flip(-1))
    torch.testing.assert_close(flipped[1, :, :, :7], images[1, :, :, :7].flip(-1))
    torch.testing.assert_close(flipped[1, :, :, 7:], images[1, :, :, 7:])  # padding stays right
    torch.testing.assert_close(flip_images(flipped, sizes), images)


@pytest.mark.parametrize("name", FAMILIES)
def test_flip_tta_of_a_symmetric_scene_equals_the_plain_decode(name, monkeypatch):
    model = create_model(name, num_classes=3).eval()
    targets, sizes = _symmetric_targets(), [(H, W)]
    perfect = model.encode_targets(targets, sizes)
    monkeypatch.setattr(model, "forward", lambda images, image_sizes=None: perfect)
    plain = model.decode(perfect, sizes)[0]
    tta = predict_tta(model, torch.rand(1, 3, H, W), sizes, "flip")[0]
    assert len(plain["boxes"]) == len(targets[0]["boxes"])
    for a, b in zip(_sorted(plain), _sorted(tta)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_flip_tta_negative_control(name, monkeypatch):
    """An asymmetric scene: the flip view sees the mirror image, so flip TTA now differs."""
    model = create_model(name, num_classes=3).eval()
    sizes = [(H, W)]
    left = [dict(boxes=torch.tensor([[10.0, 20, 34, 50]]), labels=torch.tensor([0]))]
    perfect = model.encode_targets(left, sizes)
    monkeypatch.setattr(model, "forward", lambda images, image_sizes=None: perfect)
    plain = model.decode(perfect, sizes)[0]
    tta = predict_tta(model, torch.rand(1, 3, H, W), sizes, "flip")[0]
    assert not (len(plain["boxes"]) == len(tta["boxes"]) and torch.allclose(plain["scores"], tta["scores"])
                and torch.allclose(_sorted(plain)[0], _sorted(tta)[0]))


def _mirror(targets, width):
    out = []
    for t in targets:
        b = t["boxes"]
        out.append({**t, "boxes": torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)})
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_flip_tta_of_a_padded_mixed_batch_equals_the_plain_decode(name, monkeypatch):
    """Widths that are no multiple of the stride (130, 90) in a batch padded to 160: the flip
    view's perfect output is the scene mirrored inside the width the model mirrors in (the image's
    own width; CenterNet's rounded up to its stride), and flip TTA gives back the plain decode."""
    model = create_model(name, num_classes=3).eval()
    sizes = [(96, 130), (70, 90)]
    scene = [dict(boxes=torch.tensor([[13.0, 20, 47, 60], [70, 10, 120, 50]]), labels=torch.tensor([0, 1])),
             dict(boxes=torch.tensor([[5.0, 8, 45, 60]]), labels=torch.tensor([2]))]
    flip_width = getattr(model, "flip_width", lambda w: w)
    mirrored = [_mirror([t], flip_width(w))[0] for t, (_, w) in zip(scene, sizes)]
    calls = iter([model.encode_targets(scene, sizes), model.encode_targets(mirrored, sizes)])
    monkeypatch.setattr(model, "forward", lambda images, image_sizes=None: next(calls))
    plain = model.decode(model.encode_targets(scene, sizes), sizes)
    tta = predict_tta(model, torch.rand(2, 3, 96, 160), sizes, "flip")
    for p, t, truth in zip(plain, tta, scene):
        assert len(p["boxes"]) == len(truth["boxes"]) == len(t["boxes"])
        for a, b in zip(_sorted(p), _sorted(t)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", FAMILIES)
def test_multiscale_maps_every_scale_back(name, monkeypatch):
    """Perfect predictions at scales 0.5 and 1.5 of a mixed-size batch: every view's boxes come
    back to the original pixels, so the merge holds each object once, at its place."""
    model = create_model(name, num_classes=3).eval()
    sizes = [(96, 128), (64, 90)]
    scene = [dict(boxes=torch.tensor([[10.0, 20, 50, 70], [60, 8, 120, 60]]), labels=torch.tensor([0, 1])),
             dict(boxes=torch.tensor([[4.0, 6, 60, 58]]), labels=torch.tensor([2]))]

    def perfect(images, image_sizes=None):
        scaled = []
        for t, (h, w), (vh, vw) in zip(scene, sizes, image_sizes):
            scaled.append({**t, "boxes": t["boxes"] * torch.tensor([vw / w, vh / h, vw / w, vh / h])})
        return model.encode_targets(scaled, image_sizes)

    monkeypatch.setattr(model, "forward", perfect)
    tta = predict_tta(model, torch.rand(2, 3, 96, 128), sizes, "multiscale", scales=(0.5, 1.5))
    for det, truth in zip(tta, scene):
        assert len(det["boxes"]) == len(truth["boxes"])
        boxes, _, labels = _sorted(det)
        order = sorted(range(len(truth["boxes"])), key=lambda i: tuple(truth["boxes"][i].tolist()))
        torch.testing.assert_close(boxes, truth["boxes"][order], rtol=0, atol=1.0)
        assert labels.tolist() == truth["labels"][order].tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_multiscale_at_scale_one_equals_the_plain_decode(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, score_thresh=0.0).eval()
    images = torch.rand(2, 3, 64, 96)
    sizes = [(64, 96), (50, 70)]
    with torch.no_grad():
        plain = model.decode(model(images, sizes), sizes)
    tta = predict_tta(model, images, sizes, "multiscale", scales=(1.0,))
    for p, t in zip(plain, tta):
        assert len(p["boxes"]) == len(t["boxes"]) > 0
        torch.testing.assert_close(p["scores"], t["scores"])
        torch.testing.assert_close(p["boxes"], t["boxes"])


@pytest.mark.parametrize("name", ["fcos_small", "retinanet_small"])
def test_flip_tta_is_mirror_equivariant(name):
    """With a real (random) model: flip TTA of the mirrored image is the mirror of flip TTA."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, score_thresh=0.0).eval()
    image = torch.rand(1, 3, 64, 96)
    sizes = [(64, 96)]
    a = predict_tta(model, image, sizes, "flip")[0]
    b = predict_tta(model, image.flip(-1), sizes, "flip")[0]
    mirrored = torch.stack([96 - b["boxes"][:, 2], b["boxes"][:, 1], 96 - b["boxes"][:, 0], b["boxes"][:, 3]], 1)
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
    ka = sorted(zip(a["boxes"].round(decimals=2).tolist(), a["labels"].tolist()))
    kb = sorted(zip(mirrored.round(decimals=2).tolist(), b["labels"].tolist()))
    assert len(ka) == len(kb)
    for (ba, la), (bb, lb) in zip(ka, kb):
        assert la == lb and ba == pytest.approx(bb, abs=0.05)


def test_unknown_mode_is_refused():
    model = create_model("fcos_small", num_classes=3).eval()
    with pytest.raises(ValueError, match="tta"):
        predict_tta(model, torch.rand(1, 3, 64, 64), [(64, 64)], "rotate")
