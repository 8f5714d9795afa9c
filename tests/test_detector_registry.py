"""Every registered detection model honours the detector contract on a tiny input:
forward (same keys in train and eval), loss with a ``"loss"`` total, backward, decode."""

from __future__ import annotations

import pytest
import torch

from hybridvision.registry import create_model, list_models

NUM_CLASSES = 3
SIZE = 64


def _targets() -> list[dict[str, torch.Tensor]]:
    return [dict(boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 34.0]]), labels=torch.tensor([0, 2]))]


def _check_outputs(out) -> None:
    assert isinstance(out, dict) and out
    for key, val in out.items():
        tensors = val if isinstance(val, (list, tuple)) else [val]
        assert all(isinstance(t, torch.Tensor) for t in tensors), key
        assert all(torch.isfinite(t).all() for t in tensors), key


@pytest.mark.parametrize("name", list_models(task="detection"))
def test_detector_contract(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES)
    images = torch.rand(1, 3, SIZE, SIZE)

    model.train()
    out = model(images)
    _check_outputs(out)
    losses = model.loss(out, _targets())
    assert "loss" in losses
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        out_eval = model(images)
    assert set(out_eval) == set(out)  # raw head outputs in both modes, no mode-dependent return
    dets = model.decode(out_eval, [(SIZE, SIZE - 8)])
    assert isinstance(dets, list) and len(dets) == 1
    det = dets[0]
    d = det["boxes"].shape[0]
    assert det["boxes"].shape == (d, 4) and det["scores"].shape == (d,) and det["labels"].shape == (d,)
    assert det["labels"].dtype == torch.int64
    if d:
        assert (det["labels"] >= 0).all() and (det["labels"] < NUM_CLASSES).all()
        assert (det["boxes"][:, 0::2] <= SIZE - 8 + 1e-4).all() and (det["boxes"][:, 1::2] <= SIZE + 1e-4).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()  # best first


def test_padding_is_the_mean_after_normalisation() -> None:
    """A mixed-size batch normalises as if each image were normalised alone, then zero-padded
    (torchvision's GeneralizedRCNNTransform order): padded pixels are 0, not ``-mean / std``."""
    from hybridvision.data.coco import collate_detection

    model = create_model("fcos_demo", num_classes=NUM_CLASSES)
    small, large = torch.rand(3, 40, 50), torch.rand(3, 64, 70)
    images, _, sizes = collate_detection([(small, {}), (large, {})], size_divisible=32)
    assert images.shape == (2, 3, 64, 96) and sizes == [(40, 50), (64, 70)]

    x = model.normalize(images, sizes)
    for b, im in enumerate((small, large)):
        h, w = im.shape[-2:]
        alone = model.normalize(im[None])[0]
        torch.testing.assert_close(x[b, :, :h, :w], alone)
        assert x[b, :, h:, :].abs().sum() == 0 and x[b, :, :, w:].abs().sum() == 0
    # without sizes the padding keeps its old value, -mean/std (a dark border)
    raw = model.normalize(images)
    assert torch.allclose(raw[0, :, 50:, :], (-model.pixel_mean / model.pixel_std)[0].expand(3, 14, 96))
