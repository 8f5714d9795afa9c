"""Run configuration: one typed, validated model (pydantic 2), YAML in and out, ``key=value`` overrides.

A run folder's ``config.yaml`` is exactly :meth:`TrainConfig.to_dict`, so ``hybridvision train
--config runs/x/config.yaml`` repeats a run and ``--resume`` continues it.

Every value is checked when a config is built and on every assignment (``cfg.epochs = 3``): an
out-of-range or mistyped value raises :class:`~hybridvision.errors.UserInputError` with one line
naming where it came from (the YAML file, ``overrides``), the key, the value and what is allowed,
e.g. ``overrides: epochs=0 is not valid (input should be greater than or equal to 1); allowed: an
integer >= 1``. Unknown keys are listed with the valid ones. The free-form mappings
(``model_kwargs``, ``augment``, ``data_kwargs``) hold plain YAML values (mappings with string
keys, lists, strings, finite numbers, booleans, null), at most ``MAX_NESTING`` levels deep.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hybridvision.backbones.pretrained import BACKBONE_PARAMETERS
from hybridvision.errors import UserInputError
from hybridvision.fileio import atomic_write_text, read_json
from hybridvision.options import check_model_options, check_options, model_parameters
from hybridvision.registry import UnknownModelError, model_task, registered_tasks, task_class

__all__ = ["TrainConfig", "load_config", "apply_overrides", "resume_config", "train_config", "save_config",
           "atomic_write_text", "MAX_NESTING", "DATA_KINDS"]

MAX_NESTING = 16  # levels of mappings/lists inside model_kwargs, augment, data_kwargs
MAX_VALUES = 10_000  # values inside one of those mappings (YAML aliases can multiply them)
MAPPING_KEYS = ("model_kwargs", "augment", "data_kwargs")
# The kinds of data spec the tasks read (engine/tasks/, data/sketches.py).
DATA_KINDS = ("builtin", "coco", "quickdraw", "tuberlin", "folders")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# Where the values being validated came from (a file, "overrides"); read by TrainConfig.__init__,
# which pydantic also calls from model_validate.
_SOURCE: ContextVar[str] = ContextVar("hybridvision_config_source", default="TrainConfig")

_NUMBER_FIELDS = ("image_size", "epochs", "max_steps", "batch_size", "lr", "momentum", "weight_decay",
                  "warmup_steps", "warmup_factor", "grad_clip", "label_smoothing", "workers", "seed",
                  "eval_every", "val_limit", "eval_max_dets")


def _yaml_text_number(text: str) -> str | None:
    """The spelling YAML reads as a number for ``text``, a finite number that YAML 1.1 (PyYAML)
    reads as a string: ``1e-9`` -> ``1.0e-9``, ``1e5`` -> ``1.0e+5`` (YAML 1.1 needs a dot in
    the mantissa and a sign in the exponent). None for any other text, a quoted ``"0.5"`` too."""
    if not any(c.isdigit() for c in text):  # inf, nan, infinity
        return None
    try:
        value = float(text)
        if not math.isfinite(value) or not isinstance(yaml.safe_load(text), str):
            return None
    except (ValueError, yaml.YAMLError):
        return None
    mantissa, _, exponent = text.strip().replace("_", "").lower().partition("e")
    sign = mantissa[0] if mantissa[:1] in "+-" else ""
    mantissa = mantissa.removeprefix(sign)
    mantissa = ("0" if mantissa.startswith(".") else "") + mantissa
    mantissa += ".0" if "." not in mantissa else ("0" if mantissa.endswith(".") else "")
    exponent = exponent if exponent[:1] in "+-" else f"+{exponent}"
    number = f"{'-' if sign == '-' else ''}{mantissa}" + (f"e{exponent}" if exponent != "+" else "")
    try:
        ok = yaml.safe_load(number) == value
    except yaml.YAMLError:
        ok = False
    return number if ok else None


def _plain(value: Any, where: str, depth: int = 0, count: list[int] | None = None) -> Any:
    """A copy of ``value`` as plain YAML data (dict with str keys, list, str, int, float, bool,
    None); ValueError for anything else, non-finite floats, too deep or too many values."""
    count = [0] if count is None else count
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise ValueError(f"more than {MAX_VALUES} values")
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"key {k!r} in {where} is not a string")
            out[k] = _plain(v, f"{where}.{k}", depth + 1, count)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", depth + 1, count) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}; use a finite number")
    if isinstance(value, str) and (number := _yaml_text_number(value)) is not None:
        # An option's value the user typed as a number (width=1e-9) but YAML 1.1 read as text:
        # said here, where YAML is known, instead of the model's "must be a number".
        raise ValueError(f"{where} is {value!r}: YAML reads {value} as text, not a number; write "
                         f"{number} for the number")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ValueError(f"{where} is a {type(value).__name__}; use YAML values (mapping, list, string, "
                     "number, true/false, null)")


class TrainConfig(BaseModel):
    """Everything a training run needs. Defaults are the FCOS recipe at small scale.

    Each field's ``description`` says what values are allowed (used in error messages and in
    ``hybridvision train --help``).
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid", allow_inf_nan=False,
                              coerce_numbers_to_str=True, protected_namespaces=(),
                              validate_default=True)

    model: str = Field("fcos_demo", min_length=1, description="a registered model name")
    model_kwargs: dict[str, Any] = Field(default_factory=dict,
                                         description="a mapping of the model's options, e.g. {width: 0.5}")
    # "builtin:amounts" | "coco:TRAIN_ANN,TRAIN_IMAGES[,VAL_ANN,VAL_IMAGES]" for detection;
    # "builtin:sketches" | "quickdraw:DIR" | "tuberlin:DIR" for classification;
    # "builtin:bimodal" | "folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]" for sketch-based retrieval.
    data: str = Field("builtin:amounts", description="a data spec KIND:ARGS with KIND one of "
                      + ", ".join(DATA_KINDS))
    data_root: str = Field("data", min_length=1, description="a folder (where built-in datasets are generated)")
    data_kwargs: dict[str, Any] = Field(default_factory=dict,
                                        description="a mapping of dataset options, e.g. {n_train: 100}")
    task: Literal["auto", "detection", "classification", "sbir"] = Field(
        "auto", description="auto, detection, classification or sbir")
    image_size: int = Field(128, ge=32, le=8192, description="an integer in [32, 8192] (pixels)")
    epochs: int = Field(12, ge=1, description="an integer >= 1")
    max_steps: int = Field(0, ge=0, description="an integer >= 0 (0: no limit)")
    batch_size: int = Field(16, ge=1, description="an integer >= 1")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd or adamw")
    lr: float = Field(0.01, gt=0, description="a finite number > 0")
    momentum: float = Field(0.9, ge=0, lt=1, description="a number in [0, 1)")
    weight_decay: float = Field(1e-4, ge=0, description="a finite number >= 0")
    schedule: Literal["cosine", "step"] = Field("cosine", description="cosine or step")
    milestones: list[float] = Field(default_factory=lambda: [0.67, 0.89],
                                    description="a list of fractions of training, each in (0, 1)")
    warmup_steps: int = Field(100, ge=0, description="an integer >= 0")
    warmup_factor: float = Field(0.001, gt=0, le=1, description="a number in (0, 1]")
    grad_clip: float = Field(0.0, ge=0, description="a finite number >= 0 (max gradient L2 norm; 0 disables)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="a number in [0, 1) (classification only)")
    amp: bool = Field(True, description="true or false (mixed precision, used on CUDA only)")
    augment: dict[str, Any] = Field(default_factory=dict,
                                    description="a mapping of transform options, e.g. {hflip: 0.5}")
    workers: int = Field(0, ge=0, description="an integer >= 0")
    cache_images: bool = Field(False, description="true or false (decode detection images once into memory)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="an integer in [0, 2**63 - 1]")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    out: str = Field("runs/train", min_length=1, description="a folder path (the run folder)")
    eval_every: int = Field(1, ge=0, description="an integer >= 0 (evaluate every N epochs; 0: at the end)")
    val_limit: int = Field(0, ge=0, description="an integer >= 0 (evaluate on at most N val images; 0: all)")
    eval_max_dets: int = Field(100, ge=11, le=100_000, description="an integer in [11, 100000] (detections "
                               "per image and class the COCO evaluation counts: maxDets [1, 10, N], reported as AR{N}; "
                               "the detector keeps at least N; 100 is COCO's, e.g. 300 for dense scenes)")
    progress: bool = Field(True, description="true or false")
    logger: Literal["jsonl", "tensorboard"] = Field(
        "jsonl", description="jsonl or tensorboard (also TensorBoard event files in RUN/tensorboard; "
        "needs pip install 'hybridvision[tensorboard]')")

    # --------------------------------------------------------------------------- validators
    @field_validator(*_NUMBER_FIELDS, mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any) -> Any:
        if isinstance(v, bool):  # pydantic's lax mode would read true as 1
            raise ValueError("a boolean is not a number")
        return v

    @field_validator(*MAPPING_KEYS, mode="before")
    @classmethod
    def _plain_mapping(cls, v: Any, info) -> Any:
        if not isinstance(v, dict):
            raise ValueError(f"{type(v).__name__} is not a mapping")
        return _plain(v, info.field_name)

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones_list(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            raise ValueError("not a list")
        if any(isinstance(m, bool) for m in v):
            raise ValueError("a boolean is not a number")
        return list(v)

    @field_validator("milestones")
    @classmethod
    def _milestones_range(cls, v: list[float]) -> list[float]:
        bad = [m for m in v if not 0 < m < 1]
        if bad:
            raise ValueError(f"{bad[0]:g} is outside (0, 1)")
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError("unknown device")
        return v

    @field_validator("data")
    @classmethod
    def _data_spec(cls, v: str) -> str:
        kind, sep, rest = v.partition(":")
        if not sep or kind not in DATA_KINDS or not rest.strip():
            raise ValueError("not KIND:ARGS (builtin:amounts, coco:ANN.json,IMAGES_DIR, "
                             "builtin:sketches, quickdraw:DIR, tuberlin:DIR, builtin:bimodal, "
                             "folders:SKETCH_DIR,PHOTO_DIR)")
        return v

    @model_validator(mode="after")
    def _run_options(self) -> TrainConfig:
        # After the fields: the mappings' values against the code that takes them. The
        # UserInputError passes pydantic by (not a ValueError), its one line naming the source.
        try:
            _check_run_options(self)
        except UserInputError as e:
            raise UserInputError(f"{_SOURCE.get()}: {e}") from None
        return self

    # ---------------------------------------------------------------------- construction
    def __init__(self, **data: Any) -> None:
        source = _SOURCE.get()
        _check_keys(data, source)
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise UserInputError(_describe(e, data, source)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in type(self).model_fields:
            _check_keys({name: value}, "config")
        old = self.__dict__.get(name)
        token = _SOURCE.set("config")
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise UserInputError(_describe(e, {name: value}, "config")) from None
        except UserInputError:  # the run-option check (after the field was set): keep the old value
            self.__dict__[name] = old
            raise
        finally:
            _SOURCE.reset(token)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a fresh copy), as written to ``config.yaml``."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "config") -> TrainConfig:
        """Validate a mapping of config keys; errors name ``source`` (a file, ``overrides``…)."""
        if not isinstance(d, dict):
            raise UserInputError(f"{source}: expected a mapping of config keys, got "
                                 f"{type(d).__name__}; valid keys: {', '.join(cls.model_fields)}")
        _check_keys(d, source)  # also non-string keys, which cannot be keyword arguments
        token = _SOURCE.set(source)
        try:
            return cls(**d)
        finally:
            _SOURCE.reset(token)

    def updated(self, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """A validated copy with ``values`` set (all checked together)."""
        return type(self).from_dict({**self.to_dict(), **values}, source=source)


# Task names as the messages spell them.
_TASK_WORDS = {"sbir": "SBIR"}


def _run_task(cfg: TrainConfig) -> type | None:
    """The task class of ``cfg`` (its model's; ``task`` may only repeat it); None while the model
    or task is not registered (an unknown model is refused when the run starts, with suggestions)."""
    try:
        name = model_task(cfg.model)
    except UnknownModelError:
        return None
    if cfg.task not in ("auto", name):  # before: a traceback from the other task's loss
        raise UserInputError(f"task={cfg.task}: {cfg.model} is a {name} model; use task=auto (the model's task), "
                             f"or a {cfg.task} model (hybridvision models --task {cfg.task})")
    return task_class(name) if name in registered_tasks() else None


def _check_run_options(cfg: TrainConfig) -> None:
    """The free-form mappings checked against what takes them, values normalised in place
    (``frozen_bn: "false"`` → False): ``model_kwargs`` against the model builder's annotated
    options (:mod:`hybridvision.options`), ``data_kwargs`` against the dataset factory's (the
    task's ``data_options(spec)``), ``augment`` by the task; and ``augment.close_mosaic`` that
    leaves no epoch with mosaics. UserInputError naming the key, the value and the fix."""
    if "num_classes" in cfg.model_kwargs:
        raise UserInputError(f"model_kwargs.num_classes={cfg.model_kwargs['num_classes']!r}: a run takes the "
                             "number of classes from its data (--data); remove model_kwargs.num_classes")
    task = _run_task(cfg)
    if task is None:
        return
    params = task.data_options(cfg.data) if hasattr(task, "data_options") else None
    _check_placement(cfg, model_parameters(cfg.model, BACKBONE_PARAMETERS), params)
    cfg.model_kwargs.update(check_model_options(cfg.model, cfg.model_kwargs, BACKBONE_PARAMETERS))
    if params is not None:
        owner = f"{_TASK_WORDS.get(task.name, task.name)} data {cfg.data}"
        cfg.data_kwargs.update(check_options(cfg.data_kwargs, params, key="data_kwargs", owner=owner))
    task.check_augment(cfg.augment)
    _check_close_mosaic(cfg)


def _check_placement(cfg: TrainConfig, model: dict | None, data: dict | None) -> None:
    """A data option given in ``model_kwargs`` (``margin`` of an SBIR run), or a model option in
    ``data_kwargs``: said so, with where it goes."""
    if model is None or data is None:
        return
    for key, given, own, other, where in (("model_kwargs", cfg.model_kwargs, model, data, "data_kwargs"),
                                          ("data_kwargs", cfg.data_kwargs, data, model, "model_kwargs")):
        wrong = sorted(k for k in given if k not in own and k in other)
        if wrong:
            raise UserInputError(f"{key}.{wrong[0]}={_short(given[wrong[0]])}: an option of the "
                                 f"{'data' if where == 'data_kwargs' else 'model'}, not of the "
                                 f"{'model' if key == 'model_kwargs' else 'data'}; set {where}.{wrong[0]} instead")


def _check_close_mosaic(cfg: TrainConfig) -> None:
    """``augment.close_mosaic`` >= ``epochs`` with mosaics on would silently train without any."""
    mosaic, close = cfg.augment.get("mosaic", 0), cfg.augment.get("close_mosaic", 0)
    if mosaic and isinstance(close, int) and close >= cfg.epochs:
        raise UserInputError(f"augment.close_mosaic={close} with epochs={cfg.epochs}: no epoch would use "
                             f"augment.mosaic={mosaic} (mosaics stop for the last close_mosaic epochs); set "
                             f"close_mosaic below {cfg.epochs}, or mosaic=0")


def _check_keys(d: dict, source: str) -> None:
    known = TrainConfig.model_fields
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise UserInputError(
            f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 4, 4
_REPR.maxstring, _REPR.maxother = 40, 40


def _short(value: Any, limit: int = 60) -> str:
    # reprlib: bounded in depth and width, so a huge or self-referencing value is cheap to show.
    text = _REPR.repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(e: ValidationError, given: dict[str, Any], source: str) -> str:
    """One line: every invalid key with its value, the reason and what is allowed."""
    parts = []
    seen = set()
    for err in e.errors(include_url=False):
        loc = err.get("loc") or ("?",)
        key = str(loc[0])
        if key in seen:
            continue
        seen.add(key)
        value = given.get(key, err.get("input"))
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        reason = reason[:1].lower() + reason[1:]
        if len(loc) > 1:
            reason = f"at {'.'.join(map(str, loc[1:]))}: {reason}"
        field = TrainConfig.model_fields.get(key)
        allowed = f"; allowed: {field.description}" if field is not None and field.description else ""
        parts.append(f"{key}={_short(value)} is not valid ({reason}){allowed}")
    return f"{source}: " + "; ".join(parts)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML config, with a one-line error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p}: config file not found; pass an existing YAML file")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserInputError(f"{p}{where}: not valid YAML; fix the syntax") from None
    except RecursionError:
        raise UserInputError(f"{p}: nested too deeply to read; a config is a flat mapping of keys "
                             f"with values at most {MAX_NESTING} levels deep") from None
    except (UnicodeDecodeError, OSError) as e:
        raise UserInputError(f"{p}: cannot read the config ({e.__class__.__name__}); pass a UTF-8 "
                             "YAML file") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise UserInputError(f"{p}: expected a mapping of config keys at the top level, got "
                             f"{type(d).__name__}")
    return TrainConfig.from_dict(d, source=str(p))


def resume_config(out: str | os.PathLike) -> TrainConfig:
    """The config of the run in ``out`` (``train --resume`` without ``--config``): its config.yaml,
    else the one stored in checkpoints/last.json."""
    out = Path(out)
    run_cfg = out / "config.yaml"
    if run_cfg.is_file():
        return load_config(run_cfg)
    last = out / "checkpoints" / "last.json"
    if not last.is_file():
        raise UserInputError(f"--out {out}: no config.yaml and no checkpoints/last.json, so there is no "
                             "run to resume; start without --resume, or pass the run's --config")
    state = read_json(last, what="checkpoint state")
    stored = state.get("config") if isinstance(state, dict) else None
    if not isinstance(stored, dict):
        raise UserInputError(f"{last}: holds no \"config\"; pass the run's settings with --config")
    return TrainConfig.from_dict(stored, source=str(last))


def _parse_value(item: str, text: str) -> Any:
    # YAML scalars: 0.1 -> float, true -> bool, [1,2] -> list, {a: 1} -> dict, else str.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise UserInputError(f"overrides: {_short(item)} is nested too deeply; values may be at most "
                             f"{MAX_NESTING} levels deep") from None


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings; ``model_kwargs.width=0.5`` sets a nested key.

    All overrides are validated together; errors name ``overrides``.
    """
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise UserInputError(f"overrides: {item!r} is not key=value; e.g. lr=0.01")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) > MAX_NESTING:
            raise UserInputError(f"overrides: {_short(key)} is nested deeper than {MAX_NESTING} levels")
        if parts[0] not in TrainConfig.model_fields:
            _check_keys({parts[0]: None}, "overrides")
        target = d
        for depth, part in enumerate(parts[:-1]):
            if parts[0] not in MAPPING_KEYS:
                raise UserInputError(f"overrides: {item!r}: {parts[0]!r} is not a nested config key; "
                                     f"nested keys go under {', '.join(MAPPING_KEYS)}")
            nxt = target.get(part)
            if nxt is None:
                nxt = target[part] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: depth + 1])
                raise UserInputError(f"overrides: {item!r}: {where} is {_short(nxt)}, not a mapping; "
                                     f"set {where}={{...}} or drop the nested key")
            target = nxt
        target[parts[-1]] = _parse_value(item, value)
    return TrainConfig.from_dict(d, source="overrides")


def train_config(config: str | os.PathLike | None = None, *, resume: bool = False,
                 options: dict[str, Any] | None = None, backbone_weights: str | None = None,
                 overrides: list[str] | None = None) -> TrainConfig:
    """The config of ``hybridvision train``, in its order of precedence: the built-in defaults,
    then ``config`` (or, with ``resume`` and no ``config``, the run's own: :func:`resume_config`
    of the ``out`` option, else of the default run folder), then the ``options`` that are not
    None, then ``backbone_weights`` (into ``model_kwargs``), then the key=value ``overrides``."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if resume and config is None:
        cfg = resume_config(options.get("out") or TrainConfig().out)
    else:
        cfg = load_config(config) if config else TrainConfig()
    cfg = cfg.updated(options, source="options")
    if backbone_weights:
        cfg = cfg.updated({"model_kwargs": {**cfg.model_kwargs, "backbone_weights": backbone_weights}},
                          source="--backbone-weights")
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
