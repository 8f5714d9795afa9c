"""``model_kwargs`` and ``data_kwargs`` are checked where the config is built, against the annotated
signatures of the model builder and the dataset factory that take them (issue 24): a value of the
wrong type or range, an unknown key, ``num_classes`` given twice, ``augment.close_mosaic`` that
leaves no epoch with mosaics, and pretrained weights of another ResNet end in one line naming the
key (or file), the value and the fix, exit 2, before any data is made; valid values still work."""

from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from hybridvision.backbones.pretrained import BACKBONE_PARAMETERS
from hybridvision.config import TrainConfig, apply_overrides
from hybridvision.engine.tasks import ClassificationTask, DetectionTask, SBIRTask
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model, list_models
from hybridvision.options import adapter_for, model_parameters
from hybridvision.registry import BACKBONE_OPTIONS

SBIR = ["--model", "sbir_resnet26", "--data", "builtin:bimodal"]
SKETCHES = ["--model", "resnet26", "--data", "builtin:sketches"]

# (extra train arguments, text the one-line error must hold). Before: a traceback (ValueError,
# TypeError "got multiple values for keyword argument 'num_classes'") or, for frozen_bn=maybe,
# close_mosaic and the negative seeds' neighbours, a run that went on.
BAD = [
    (["data_kwargs.n_train=abc"], "data_kwargs.n_train='abc' is not valid for detection data builtin:amounts "
                                  "(input should be a valid integer"),
    (["data_kwargs.n_train=-1"], "data_kwargs.n_train=-1 is not valid"),
    (["data_kwargs.seed=-1"], "data_kwargs.seed=-1 is not valid"),  # before: numpy's traceback
    (["data_kwargs.source=mnist"], "data_kwargs source: not an option of detection data builtin:amounts; "
                                   "valid: n_train, n_val, seed, image_size"),
    (["model_kwargs.num_classes=3"], "model_kwargs.num_classes=3: a run takes the number of classes from its "
                                     "data (--data); remove model_kwargs.num_classes"),
    (["model_kwargs.freeze_stages=abc"], "model_kwargs.freeze_stages='abc' is not valid for model 'fcos_demo'"),
    (["model_kwargs.freeze_stages=9"], "model_kwargs.freeze_stages=9 is not valid for model 'fcos_demo' (input "
                                       "should be less than or equal to 5)"),
    (["model_kwargs.frozen_bn=maybe"], "model_kwargs.frozen_bn='maybe' is not valid for model 'fcos_demo' (input "
                                       "should be a valid boolean, unable to interpret input); allowed: true or false"),
    (["model_kwargs.num_levels=true"], "model_kwargs.num_levels=True is not valid for model 'fcos_demo' (a boolean "
                                       "is not a number)"),
    (["model_kwargs.size_ranges=abc"], "model_kwargs.size_ranges='abc' is not valid"),
    (["model_kwargs.backbone_norm=bn"], "model_kwargs.backbone_norm='bn' is not valid"),  # before: a TypeError text
    (["augment.mosaic=0.5", "augment.close_mosaic=1"], "augment.close_mosaic=1 with epochs=1: no epoch would use "
                                                       "augment.mosaic=0.5"),
    ([*SBIR, "data_kwargs.val_fraction=abc"], "data_kwargs.val_fraction='abc' is not valid for SBIR data"),
    ([*SBIR, "data_kwargs.val_fraction=1.5"], "data_kwargs.val_fraction=1.5 is not valid for SBIR data builtin:"
                                              "bimodal (input should be less than 1); allowed: a number > 0, < 1"),
    ([*SBIR, "data_kwargs.margin=abc"], "data_kwargs.margin='abc' is not valid for SBIR data"),
    ([*SBIR, "data_kwargs.margin=-1"], "data_kwargs.margin=-1 is not valid for SBIR data"),
    ([*SBIR, "data_kwargs.hard_negatives=maybe"], "data_kwargs.hard_negatives='maybe' is not valid"),
    ([*SBIR, "data_kwargs.sketches=abc"], "data_kwargs.sketches='abc' is not valid"),
    ([*SBIR, "data_kwargs.size=8"], "data_kwargs.size=8 is not valid for SBIR data builtin:bimodal (input should "
                                    "be greater than or equal to 16)"),  # before: refused only when the data was built
    ([*SBIR, "model_kwargs.margin=1"], "model_kwargs.margin=1: an option of the data, not of the model; set "
                                       "data_kwargs.margin instead"),
    ([*SBIR, "model_kwargs.stage=5"], "model_kwargs.stage=5 is not valid for model 'sbir_resnet26'"),
    ([*SBIR, "model_kwargs.hidden=abc"], "model_kwargs.hidden='abc' is not valid for model 'sbir_resnet26'"),
    ([*SKETCHES, "data_kwargs.builtin_seed=-1"], "data_kwargs.builtin_seed=-1 is not valid"),  # before: traceback
    ([*SKETCHES, "data_kwargs.val_fraction=1.5"], "data_kwargs.val_fraction=1.5 is not valid for classification"),
    ([*SKETCHES, "data_kwargs.per_class=0"], "data_kwargs.per_class=0 is not valid"),  # before: "no drawings"
    ([*SKETCHES, "data_kwargs.supersample=0"], "data_kwargs.supersample=0 is not valid"),  # before: accepted
    ([*SKETCHES, "data_kwargs.classes=cat"], "data_kwargs.classes='cat' is not valid"),
    ([*SKETCHES, "data_kwargs.seed=3"], "data_kwargs seed: not an option of classification data builtin:sketches"),
    (["--model", "resnet26", "task=detection"], "task=detection: resnet26 is a classification model; use task=auto"),
    ([*SKETCHES, "model_kwargs.aggregation=foo"], "model_kwargs.aggregation='foo' is not valid for model 'resnet26' "
                                                  "(input should be 'shift' or 'unfold')"),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[" ".join(a[-2:] if a[0] == "--model" else a)
                                                   for a, _ in BAD])
def test_bad_option_values_are_one_line_before_any_work(cli, tmp_path, args, expected):
    code, out, err = cli("train", *args, "--out", tmp_path / "run", f"data_root={tmp_path / 'd'}", "epochs=1")
    assert code == 2 and err.startswith("error: overrides: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()


def test_the_same_values_in_a_yaml_config_name_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_kwargs:\n  frozen_bn: maybe\n")
    from hybridvision.config import load_config

    with pytest.raises(UserInputError, match=r"c\.yaml: model_kwargs\.frozen_bn='maybe' is not valid"):
        load_config(cfg)
    with pytest.raises(UserInputError, match=r"TrainConfig: data_kwargs\.n_train='abc'"):
        TrainConfig(data_kwargs={"n_train": "abc"})
    cfg = TrainConfig()
    with pytest.raises(UserInputError, match=r"^config: model_kwargs\.freeze_stages='abc'"):
        cfg.model_kwargs = {"freeze_stages": "abc"}
    assert cfg.model_kwargs == {}  # the refused value is not kept
    with pytest.raises(UserInputError, match=r"^config: augment\.close_mosaic=3 with epochs=2"):
        cfg.epochs, cfg.augment = 2, {"mosaic": 0.5, "close_mosaic": 3}
    assert cfg.augment == {} and cfg.epochs == 2


def test_valid_values_are_accepted_and_read_as_their_type():
    cfg = apply_overrides(TrainConfig(), ["model_kwargs.frozen_bn=false", "model_kwargs.freeze_stages=1",
                                          "data_kwargs.n_train='8'", "model_kwargs.width=1",
                                          "model_kwargs.size_ranges=[[0, 32], [32, 64], [64, 1.0e+9]]"])
    # "false" and '8' read as what the code takes; values that already are stay as given
    assert cfg.model_kwargs == {"frozen_bn": False, "freeze_stages": 1, "width": 1,
                                "size_ranges": [[0, 32], [32, 64], [64, 1e9]]}
    assert cfg.data_kwargs == {"n_train": 8}
    for text, value in (("true", True), ("1", True), ("0", False), ("no", False)):
        assert apply_overrides(TrainConfig(), [f"model_kwargs.frozen_bn={text}"]).model_kwargs["frozen_bn"] is value
    sbir = TrainConfig(model="sbir_resnet26", data="builtin:bimodal", model_kwargs={"stage": 2, "width": 0.25},
                       data_kwargs={"val_fraction": 0.3, "margin": 0.5, "hard_negatives": True, "sketches": 3})
    assert sbir.data_kwargs["margin"] == 0.5
    folders = TrainConfig(model="sbir_resnet26", data="folders:a,b", data_kwargs={"val_fraction": 0.25})
    assert folders.data_kwargs == {"val_fraction": 0.25}
    with pytest.raises(UserInputError, match="data_kwargs sketches: not an option of SBIR data folders:a,b"):
        TrainConfig(model="sbir_resnet26", data="folders:a,b", data_kwargs={"sketches": 3})
    quick = TrainConfig(model="resnet26", data="quickdraw:d", data_kwargs={"fmt": "npy", "line_width": 2,
                                                                          "classes": ["cat"]})
    assert quick.data_kwargs["classes"] == ["cat"]
    # the close_mosaic rule: fewer closing epochs than epochs, or no mosaics, is fine
    TrainConfig(epochs=5, augment={"mosaic": 0.5, "close_mosaic": 4})
    TrainConfig(epochs=1, augment={"mosaic": 0, "close_mosaic": 3})


def test_python_api_checks_the_same_way():
    with pytest.raises(UserInputError, match=r"model_kwargs\.frozen_bn='maybe' is not valid for model 'fcos_small'"):
        create_model("fcos_small", num_classes=3, frozen_bn="maybe")
    model = create_model("fcos_small", num_classes=3, frozen_bn="false", freeze_stages="1")
    assert isinstance(model.backbone.bn1, torch.nn.BatchNorm2d) and not model.backbone.conv1.weight.requires_grad
    with pytest.raises(UserInputError, match=r"model_kwargs\.num_classes=True .*a boolean is not a number"):
        create_model("fcos_small", num_classes=True)


def test_every_registered_builder_declares_typed_options():
    """Every option of every model has an annotation pydantic can check (none taken on trust)."""
    assert tuple(BACKBONE_PARAMETERS) == BACKBONE_OPTIONS
    untyped = []
    for name in list_models():
        params = model_parameters(name, BACKBONE_PARAMETERS)
        assert params is not None, f"{name} forwards **kwargs without declaring them (builder.options)"
        untyped += [f"{name}.{k}" for k, p in params.items() if adapter_for(p) is None]
    assert not untyped, untyped


@pytest.mark.parametrize("task,spec,keys", [
    (DetectionTask, "builtin:amounts", {"n_train", "n_val", "seed", "image_size"}),
    (DetectionTask, "coco:a.json,imgs", set()),
    (ClassificationTask, "builtin:sketches", {"per_class", "val_fraction", "classes", "recognized_only",
                                              "raster_size", "line_width", "padding", "supersample",
                                              "builtin_seed"}),
    (ClassificationTask, "tuberlin:d", {"per_class", "val_fraction", "classes"}),
    (SBIRTask, "builtin:bimodal", {"val_fraction", "margin", "hard_negatives", "sketches", "photos", "size"}),
    (SBIRTask, "folders:a,b", {"val_fraction", "margin", "hard_negatives"}),
])
def test_every_data_option_is_typed(task, spec, keys):
    params = task.data_options(spec)
    assert set(params) == keys
    assert all(adapter_for(p) is not None for p in params.values()), params
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())


# ------------------------------------------------------------------------------- pretrained weights
@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    """torchvision ResNet-18/-34/-50 random weights as .safetensors."""
    root = tmp_path_factory.mktemp("resnets")
    torch.manual_seed(0)
    for depth in (18, 34, 50):
        sd = getattr(torchvision.models, f"resnet{depth}")().state_dict()
        save_file({k: v.contiguous() for k, v in sd.items()}, str(root / f"r{depth}.safetensors"))
    return root


def test_weights_of_another_resnet_are_refused_with_counts(resnet_files):
    # before: 77 tensors loaded into the ResNet-18, the rest of the ResNet-50's unused, and training went on
    with pytest.raises(UserInputError) as e:
        create_model("fcos_r18_fpn", num_classes=3, backbone_weights=str(resnet_files / "r50.safetensors"))
    msg = str(e.value)
    assert "does not fit this backbone, a ResNet-18 (the file holds a ResNet-50): 77 of the file's 265 " in msg
    assert "165 are not in the backbone (layer1.0.bn3, " in msg
    assert "23 have another shape (layer1.0.conv1.weight: [64, 64, 1, 1] in the file, [64, 64, 3, 3] here" in msg
    assert msg.endswith("pass a ResNet-18's weights (e.g. torchvision:resnet18), or train a model whose backbone "
                        "is a ResNet-50 (model_kwargs.depth=50)")
    with pytest.raises(UserInputError, match=r"a ResNet-50 \(the file holds a ResNet-18\).*165 of the backbone's "
                                             r"are not in the file"):
        create_model("fcos_r50_fpn", num_classes=3, backbone_weights=str(resnet_files / "r18.safetensors"))
    # same shapes where both have a tensor, but the file's extra blocks: a ResNet-34
    with pytest.raises(UserInputError, match=r"holds a ResNet-34\): 100 of the file's 180 tensors fit; 80 are not"):
        create_model("fcos_r18_fpn", num_classes=3, backbone_weights=str(resnet_files / "r34.safetensors"))
    with pytest.raises(UserInputError, match=r"a ResNet-18 ×0.25 .*\(model_kwargs.width=1\)"):
        create_model("fcos_small", num_classes=3, backbone_weights=str(resnet_files / "r18.safetensors"))
    with torch.device("meta"), pytest.raises(UserInputError, match="does not fit"):  # the run's check, before data
        create_model("fcos_r18_fpn", num_classes=1, backbone_weights=str(resnet_files / "r50.safetensors"))


def test_weights_that_fit_still_load(resnet_files, tmp_path):
    model = create_model("fcos_r18_fpn", num_classes=3, backbone_weights=str(resnet_files / "r18.safetensors"))
    report = model.backbone_weights_report
    assert report["loaded"] == 120 and report["missing"] == [] and report["skipped"] == ["fc.bias", "fc.weight"]
    # the model's own attention blocks are not in any ResNet file; a detector's other parts are ignored
    from safetensors.torch import load_file

    sd = load_file(resnet_files / "r18.safetensors")
    save_file({**{f"backbone.body.{k}": v for k, v in sd.items()}, "backbone.fpn.inner.weight": torch.zeros(2)},
              str(tmp_path / "detector.safetensors"))
    model = create_model("fcos_r18_fpn", num_classes=3, backbone_attn="nonlocal", backbone_attn_at=[[3, 0]],
                         backbone_weights=str(tmp_path / "detector.safetensors"))
    report = model.backbone_weights_report
    assert report["unexpected"] == ["fpn.inner.weight"] and report["missing"][0].startswith("layer3.attn0.")
    torch.testing.assert_close(model.backbone.layer2[0].conv1.weight, sd["layer2.0.conv1.weight"])


def test_train_refuses_weights_of_another_resnet_before_any_data(cli, tmp_path, resnet_files):
    code, _, err = cli("train", "--model", "fcos_r18_fpn", "--backbone-weights", resnet_files / "r50.safetensors",
                       "--out", tmp_path / "run", f"data_root={tmp_path / 'd'}")
    assert code == 2 and "does not fit this backbone, a ResNet-18" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_eval_on_other_data_drops_the_training_datas_options(cli, tmp_path, tiny_amounts):
    """A run trained on builtin:amounts with data_kwargs, evaluated on a COCO pair: the options of the
    built-in data do not apply to it (before: refused, and the checkpoint's config cannot be edited)."""
    code, _, err = cli("train", "--out", tmp_path / "run", f"data_root={tiny_amounts}", "--image-size", "64",
                       "data_kwargs={n_train: 32, n_val: 8, image_size: 64}", "epochs=1", "max_steps=1", "-b", "4",
                       "warmup_steps=1", "progress=false")
    assert code == 0, err
    val = tiny_amounts / "amounts" / "val"
    spec = f"coco:{val / 'annotations.json'},{val / 'images'}"
    code, out, err = cli("eval", "--run", tmp_path / "run", "--data", spec, "--out", tmp_path / "eval")
    assert code == 0 and "AP" in out, err
