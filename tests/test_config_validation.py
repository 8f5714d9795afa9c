"""The run config rejects every out-of-range or mistyped value with one line (exit 2, no
traceback, nothing written), from key=value overrides, options, YAML files and the Python API;
the study and predict verbs check their inputs before any work; every verb's --help shows defaults."""

from __future__ import annotations

import pytest
import typer

from hybridvision.cli import app
from hybridvision.config import TrainConfig, apply_overrides, load_config, save_config
from hybridvision.errors import UserInputError

# (override, text the one-line error must contain)
BAD_OVERRIDES = [
    ("epochs=0", "an integer >= 1"),
    ("epochs=-1", "an integer >= 1"),
    ("epochs=1.5", "epochs=1.5"),
    ("epochs=abc", "epochs='abc'"),
    ("epochs=true", "epochs=True"),
    ("batch_size=0", "batch_size=0"),
    ("lr=0", "a finite number > 0"),
    ("lr=-0.1", "lr=-0.1"),
    ("lr=abc", "lr='abc'"),
    ("lr=.nan", "finite"),
    ("lr=.inf", "finite"),
    ("image_size=31", "an integer in [32, 8192]"),
    ("image_size=99999999999999999999", "an integer in [32, 8192]"),  # before: an overflow traceback
    ("seed=18446744073709551616", "seed="),  # before: an overflow traceback
    ("image_size=null", "image_size=None"),
    ("image_size=64.5", "image_size=64.5"),
    ("workers=-1", "workers=-1"),
    ("seed=-3", "seed=-3"),
    ("label_smoothing=1", "[0, 1)"),
    ("label_smoothing=-0.1", "[0, 1)"),
    ("val_limit=-1", "val_limit=-1"),
    ("max_steps=-1", "max_steps=-1"),
    ("eval_every=-1", "eval_every=-1"),
    ("warmup_steps=-5", "warmup_steps=-5"),
    ("warmup_factor=0", "(0, 1]"),
    ("warmup_factor=1.5", "(0, 1]"),
    ("momentum=1", "[0, 1)"),
    ("weight_decay=-1e-4", "weight_decay"),
    ("grad_clip=-1", "grad_clip=-1"),
    ("optimizer=adam", "sgd or adamw"),
    ("schedule=linear", "cosine or step"),
    ("task=segmentation", "auto, detection, classification or sbir"),
    ("milestones=[0.5,1.5]", "(0, 1)"),
    ("milestones=0.5", "milestones=0.5"),
    ("model_kwargs=3", "model_kwargs=3"),
    ("augment=[1,2]", "augment=[1, 2]"),
    ("data_kwargs=abc", "data_kwargs='abc'"),
    ("model_kwargs.width=.inf", "finite"),
    ("data_kwargs={1: 2}", "not a string"),
    ("model_kwargs={a: " + "[" * 40 + "]" * 40 + "}", "nested deeper"),
    ("model_kwargs=" + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("device=gpu", "auto, cpu, cuda, cuda:N or mps"),
    ("device=[cpu]", "device=['cpu']"),
    ("amp=maybe", "amp='maybe'"),
    ("progress=2", "progress=2"),
    ("data=foo", "KIND:ARGS"),
    ("nope=1", "valid keys: amp, augment"),
    ("epochs.x=1", "not a nested config key"),
    ("epochs", "key=value"),
]


@pytest.mark.parametrize("override,expected", BAD_OVERRIDES, ids=[o[:30] for o, _ in BAD_OVERRIDES])
def test_train_rejects_bad_override(cli, tmp_path, override, expected):
    out = tmp_path / "run"
    code, stdout, err = cli("train", override, "--out", out, f"data_root={tmp_path / 'data'}")
    assert code == 2, (stdout, err)
    assert err.startswith("error: overrides") and len(err.strip().splitlines()) == 1, err
    assert expected in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "data").exists()  # nothing written, no data made


@pytest.mark.parametrize("option,value,key", [
    ("--epochs", "0", "epochs=0"), ("--batch-size", "0", "batch_size=0"), ("--lr", "-1", "lr=-1"),
    ("--lr", "nan", "lr=nan"), ("--image-size", "16", "image_size=16"), ("--optimizer", "adam", "optimizer"),
    ("--device", "gpu", "device='gpu'"), ("--workers", "-2", "workers=-2"), ("--seed", "-1", "seed=-1"),
])
def test_train_rejects_bad_option(cli, tmp_path, option, value, key):
    code, _, err = cli("train", option, value, "--out", tmp_path / "run")
    assert code == 2 and err.startswith("error: options:") and key in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_mistyped_option_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "--epochs", "abc", "--out", tmp_path / "run")
    assert code == 2 and err.startswith("error:") and "--epochs" in err and "train --help" in err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_augment_option_names_the_valid_ones(cli, tmp_path):
    code, _, err = cli("train", "augment.flip=0.5", "--out", tmp_path / "run", f"data_root={tmp_path / 'd'}")
    valid = "hflip, vflip, rot90, scale_jitter, crop, color_jitter"
    assert code == 2 and f"augment.flip: unknown option; valid: {valid}" in err
    code, _, err = cli("train", "augment.hflip=2", "--out", tmp_path / "run", f"data_root={tmp_path / 'd'}")
    assert code == 2 and "augment.hflip=2" in err and "[0, 1]" in err
    code, _, err = cli("train", "--model", "resnet26", "--data", "builtin:sketches", "augment.in_chans=1",
                       "--out", tmp_path / "run", f"data_root={tmp_path / 'd'}")
    assert code == 2 and "augment.in_chans: unknown option; valid: invert, scale" in err, err
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()  # checked before the data


def test_yaml_errors_name_the_file(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 0\nlr: abc\n")
    code, _, err = cli("train", "--config", bad, "--out", tmp_path / "run")
    assert code == 2 and err.startswith(f"error: {bad}: epochs=0") and "lr='abc'" in err, err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epochz: 3\n")
    code, _, err = cli("train", "--config", unknown, "--out", tmp_path / "run")
    assert code == 2 and "unknown key(s) epochz; valid keys:" in err and str(unknown) in err
    for text in ("model_kwargs: " + "[" * 100_000 + "]" * 100_000,  # beyond the YAML parser's recursion
                 "model_kwargs: &a {x: *a}\n",  # a self-referencing value
                 "- 1\n- 2\n",  # not a mapping
                 "epochs: [\n"):  # not YAML
        deep = tmp_path / "deep.yaml"
        deep.write_text(text)
        code, _, err = cli("train", "--config", deep, "--out", tmp_path / "run")
        assert code == 2 and str(deep) in err and len(err.strip().splitlines()) == 1, (text[:20], err)
    assert not (tmp_path / "run").exists()


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["model_kwargs:", '  a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdef", "bcdefg"):
        lines.append(f"  {name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match="more than 10000 values"):
        load_config(bomb)


def test_round_trip_and_assignment(tmp_path):
    cfg = TrainConfig(model_kwargs={"width": 0.5, "head_attn_kwargs": {"at": [3]}},
                      augment={"scale_jitter": (0.5, 1.0)},
                      milestones=[0.5, 0.75], lr=1e-3, data="coco:a.json,imgs")
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert again.augment == {"scale_jitter": [0.5, 1.0]}  # plain YAML: a tuple is stored as a list
    cfg.epochs = 3
    assert cfg.epochs == 3
    with pytest.raises(UserInputError, match=r"config: epochs=0 is not valid.*an integer >= 1"):
        cfg.epochs = 0
    assert cfg.epochs == 3
    with pytest.raises(UserInputError, match="unknown key.*valid keys"):
        cfg.epoch = 3
    with pytest.raises(UserInputError, match=r"TrainConfig: image_size=8 .*; lr=-1 "):
        TrainConfig(lr=-1, image_size=8)
    assert apply_overrides(TrainConfig(), ["lr=1e-3"]).lr == 1e-3  # YAML reads 1e-3 as a string


STUDY_BAD = [
    (["epochs=0"], "epochs=0"),
    (["lr=abc"], "lr='abc'"),
    (["nope=1"], "unknown key"),
    (["augment.flip=1"], "augment.flip: unknown option"),
    (["model=fcos_nope"], "fcos_nope"),
    (["--data", "foo:bar"], "--data foo:bar: not detection data"),
    (["--data", "foo"], "--data foo: not a data spec"),
    (["--data", "coco:missing.json,imgs"], "missing.json not found"),
    (["--data", "coco:only_one.json"], "2 or 4"),
    (["--data", "builtin:sketches"], "not detection data"),
    # before: a dry run planned all runs and exited 0, the real run then refused (#385)
    (["model_kwargs.width=-1"], "ResNet width=-1 must be a number in (0, 16]"),
]


@pytest.mark.parametrize("args,expected", STUDY_BAD, ids=[" ".join(a) for a, _ in STUDY_BAD])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_study_refuses_bad_settings_before_any_run(cli, tmp_path, args, expected, dry_run):
    out = tmp_path / "study"
    code, _, err = cli("study", "fcos-nonlocal", *args, "--out", out, "--device", "cpu",
                       *(["--dry-run"] if dry_run else []))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("conf", ["2", "-0.1", "nan"])
def test_predict_conf_outside_0_1(cli, tmp_path, conf):
    code, _, err = cli("predict", tmp_path, "--weights", tmp_path / "w.safetensors", "--conf", conf,
                       "--out", tmp_path / "pred")
    assert code == 2 and err.startswith("error: --conf") and "[0, 1]" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "pred").exists()


@pytest.mark.parametrize("args, expected", [(["--iou", "0"], "--iou"), (["--iou", "1.5"], "--iou"),
                                            (["--max-det", "0"], "--max-det"), (["--image-size", "8"], "--image-size"),
                                            (["--tile-overlap", "1"], "--tile-overlap")])
def test_predict_options_are_validated(cli, tmp_path, args, expected):
    code, _, err = cli("predict", tmp_path, "--weights", tmp_path / "w.safetensors", *args, "--out", tmp_path / "p")
    assert code == 2 and err.startswith(f"error: {expected}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def _leaf_commands(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_option_shows_its_default():
    """A value option that is not required shows its default: typer's [default: X], or the text
    the help gives when the default is None (train: the config's value)."""
    missing = []
    for name, cmd in _leaf_commands(typer.main.get_command(app)):
        for p in cmd.params:
            if p.name == "help" or p.required or getattr(p, "is_flag", False) or p.param_type_name == "argument":
                continue
            if p.default is None and "[default:" not in (p.help or ""):
                missing.append(f"{name} --{p.name}")
    assert not missing, missing


def test_train_help_shows_config_defaults(cli):
    code, out, _ = cli("train", "--help")
    flat = " ".join(out.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())  # no box, one line
    assert code == 0 and "[default: 12 (from the config)]" in flat and "[default: fcos_demo (from the config)]" in flat


@pytest.mark.parametrize("key,expected", [
    ("model_kwargs.width=-1", "width=-1 must be a number in (0, 16]"),  # before: accepted, trained
    # before: "str doesn't define __round__"; now the builder's annotation (float) refuses it
    ("model_kwargs.width=abc", "model_kwargs.width='abc' is not valid for model 'fcos_demo' (input should be a "
                               "valid number, unable to parse string as a number); allowed: a number"),
    # #105, before: "width='1e-9' must be a number" though the user typed a number
    ("model_kwargs.width=1e-9", "model_kwargs.width is '1e-9': YAML reads 1e-9 as text, not a number; "
                                "write 1.0e-9 for the number"),
])
def test_bad_model_option_values_stop_before_any_data_is_made(cli, tmp_path, key, expected):
    code, _, err = cli("train", key, "--out", tmp_path / "run", f"data_root={tmp_path / 'd'}")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()


def test_a_number_yaml_reads_as_text_is_explained_wherever_it_is_written(tmp_path):
    from hybridvision.config import _yaml_text_number

    assert [_yaml_text_number(t) for t in ("1e-9", "1E5", "-.5e-3", "1.e5", "+2e+3")] == [
        "1.0e-9", "1.0e+5", "-0.5e-3", "1.0e+5", "2.0e+3"]
    for text in ("0.5", "abc", "inf", "nan", "12e", "0o7"):  # numbers YAML reads, and no numbers
        assert _yaml_text_number(text) is None, text
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_kwargs:\n  width: 1e-9\naugment:\n  scale: 2e-1\n")
    with pytest.raises(UserInputError, match=r"c\.yaml: .*YAML reads 1e-9 as text, not a number; write 1\.0e-9"):
        load_config(cfg)
    cfg.write_text("model_kwargs:\n  width: 1.0e-9\n")
    assert load_config(cfg).model_kwargs == {"width": 1e-9}
    with pytest.raises(UserInputError, match=r"augment.scale is '2e-1': YAML reads 2e-1 as text.*write 2\.0e-1"):
        apply_overrides(TrainConfig(), ["augment.scale=2e-1"])
    assert apply_overrides(TrainConfig(), ["model_kwargs.neck=abc"]).model_kwargs == {"neck": "abc"}


@pytest.mark.parametrize("model,data,key", [
    ("fcos_demo", "builtin:amounts", "model_kwargs.foo=1"),  # a preset forwarding **kwargs
    ("resnet26", "builtin:sketches", "model_kwargs.foo=1"),
])
def test_unknown_model_kwargs_are_named_before_any_data_is_made(cli, tmp_path, model, data, key):
    """Before: a preset that forwards **kwargs built the data first, then failed deep inside
    (a TypeError from the head), after generating data in data_root."""
    code, _, err = cli("train", "--model", model, "--data", data, key, "--out", tmp_path / "run",
                       f"data_root={tmp_path / 'd'}")
    assert code == 2 and err.startswith(f"error: overrides: model_kwargs foo: not an option of model '{model}'; "
                                        "valid: "), err
    assert ("num_convs" in err) == (model == "fcos_demo") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()


def test_train_help_lists_every_setting_with_its_default(cli):
    from hybridvision.config import TrainConfig

    code, out, _ = cli("train", "--help")
    assert code == 0
    for key, value in TrainConfig().to_dict().items():
        assert f"{key}={value}" in out, key
