"""Pretrained backbones from local files: a torchvision ResNet-50 (random weights) saved as .pth and
as .safetensors loads into fcos_r50_fpn's backbone with C3–C5 equal to torchvision's layer2–4; a
pickle that carries code is refused and never run; frozen stages and FrozenBatchNorm2d."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.ops import FrozenBatchNorm2d

from hybridvision.errors import UserInputError
from hybridvision.factory import create_model


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    with torch.no_grad():  # non-trivial BN statistics, so a missed buffer shows
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("pretrained")
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, root / "r50.pth")
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(root / "r50.safetensors"))
    return tv, root


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_c3_to_c5_equal_torchvisions_layers(resnet50, suffix):
    tv, root = resnet50
    # BatchNorm as trained (FrozenBatchNorm2d folds it into scale and shift: equal up to rounding,
    # ~1e-4 on the large activations of a random ResNet-50's C4/C5)
    model = create_model("fcos_r50_fpn", num_classes=3, backbone_weights=str(root / f"r50{suffix}"),
                         frozen_bn=False).eval()
    report = model.backbone_weights_report
    assert report["loaded"] == 318 and report["missing"] == [] and report["skipped"] == ["fc.bias", "fc.weight"]
    # in double: a random ResNet-50's C4/C5 activations reach the hundreds, where float32 rounding
    # alone (different conv kernels) exceeds 1e-5
    x = torch.rand(1, 3, 96, 96, dtype=torch.float64)
    model.double()
    tv = tv.double()
    with torch.no_grad():
        c3, c4, c5 = model.backbone(x)
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        t2 = tv.layer2(tv.layer1(t))
        t3 = tv.layer3(t2)
        t4 = tv.layer4(t3)
    for ours, theirs in ((c3, t2), (c4, t3), (c5, t4)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # the recipe's defaults with pretrained weights: stem and layer1 frozen, BatchNorm frozen
    recipe = create_model("fcos_r50_fpn", num_classes=3, backbone_weights=str(root / f"r50{suffix}")).eval()
    assert not recipe.backbone.conv1.weight.requires_grad and not any(
        p.requires_grad for p in recipe.backbone.layer1.parameters())
    assert all(p.requires_grad for p in recipe.backbone.layer2.parameters())
    assert isinstance(recipe.backbone.bn1, FrozenBatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(recipe.double().backbone(x)[0], c3, atol=1e-5, rtol=1e-5)
    tv.float()


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload()}, f)
    with pytest.raises(UserInputError, match="refused .* nothing in it was run"):
        create_model("fcos_r50_fpn", num_classes=3, backbone_weights=str(path))
    assert "this must never run" not in capsys.readouterr().out


def test_torchvision_name_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserInputError, match=r"resnet50-.*\.pth .*download.pytorch.org"):
        create_model("fcos_r50_fpn", num_classes=3, backbone_weights="torchvision:resnet50")
    with pytest.raises(UserInputError, match="not a ResNet"):
        create_model("cornernet_small", num_classes=3, frozen_bn=True)


def test_options_without_weights_and_the_checkpoint_round_trip(resnet50, tmp_path):
    _, root = resnet50
    plain = create_model("fcos_small", num_classes=3, freeze_stages=1)
    assert not plain.backbone.conv1.weight.requires_grad and plain.backbone.layer1[0].conv1.weight.requires_grad
    assert isinstance(plain.backbone.bn1, torch.nn.BatchNorm2d)  # frozen_bn defaults to False without weights
    with pytest.raises(UserInputError, match="freeze_stages=9"):
        create_model("fcos_small", num_classes=3, freeze_stages=9)
    # a checkpoint of a model started from pretrained weights loads without the weights file
    from hybridvision.api import load_trained
    from hybridvision.engine.checkpoint import save_checkpoint

    import shutil

    shutil.copy(root / "r50.safetensors", tmp_path / "r50.safetensors")
    kwargs = {"backbone_weights": str(tmp_path / "r50.safetensors")}
    model = create_model("fcos_r50_fpn", num_classes=3, **kwargs)
    weights = save_checkpoint(tmp_path, "run", model, extra={"model": "fcos_r50_fpn", "num_classes": 3,
                                                             "model_kwargs": kwargs, "task": "detection"})
    (tmp_path / "r50.safetensors").unlink()
    loaded, _ = load_trained(weights)
    assert isinstance(loaded.backbone.bn1, FrozenBatchNorm2d)
    torch.testing.assert_close(loaded.backbone.layer3[0].conv1.weight, model.backbone.layer3[0].conv1.weight)


def test_train_flag_refuses_a_missing_or_unfitting_file_in_one_line(cli, tmp_path, resnet50):
    code, _, err = cli("train", "--model", "fcos_small", "--backbone-weights", tmp_path / "none.pth",
                       "--out", tmp_path / "run")
    assert code == 2 and "backbone_weights" in err and "file not found" in err and "Traceback" not in err
    _, root = resnet50  # ResNet-50 weights into fcos_small's ResNet-18 ×0.25: nothing fits
    code, _, err = cli("train", "--model", "fcos_small", "--backbone-weights", root / "r50.safetensors",
                       "--out", tmp_path / "run2", "-b", "4", "max_steps=1", "epochs=1", "data_kwargs.n_train=8",
                       "data_kwargs.n_val=4", f"data_root={tmp_path / 'data'}")
    assert code == 2 and "does not fit this backbone" in err


def test_frozen_batchnorm_spares_attention_blocks_and_what_the_file_lacks(resnet50):
    model = create_model("fcos_small", num_classes=3, backbone_attn="nonlocal", backbone_attn_at=[(3, 0)],
                         frozen_bn=True)
    attn_bns = [m for n, m in model.backbone.named_modules() if "attn" in n and isinstance(m, torch.nn.BatchNorm2d)]
    assert attn_bns and not any(isinstance(m, FrozenBatchNorm2d) for n, m in model.backbone.named_modules()
                                if "attn" in n)
    assert isinstance(model.backbone.bn1, FrozenBatchNorm2d)
