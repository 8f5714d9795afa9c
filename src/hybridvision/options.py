"""Keyword options checked against the annotated signature of the code that takes them.

``model_kwargs`` go to a model builder, ``data_kwargs`` to a dataset factory: both are free-form
mappings in the run config, so their values reach that code without the config's typing. Here
they are checked, at the config's boundary, against the keyword parameters of the callables that
take them (their type annotations, with ``annotated_types`` bounds such as :data:`Fraction`):
an unknown name is refused with the valid ones, a value of the wrong type or range with the key,
the value and what is allowed (pydantic's lax rules: ``"3"`` reads as 3, ``true``/``false``/``1``/
``0`` as booleans, ``maybe`` and a boolean given for a number are refused)::

    params = keyword_parameters(make_amounts, exclude=("source",))
    check_options({"n_train": "abc"}, params, key="data_kwargs", owner="detection data builtin:amounts")
    # UserInputError: data_kwargs.n_train='abc' is not valid for detection data builtin:amounts
    #   (input should be a valid integer, unable to parse string as an integer); allowed: an integer

A leaf above :mod:`hybridvision.registry`: it imports nothing of the package but the registry and
the error type.
"""

from __future__ import annotations

import functools
import inspect
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import ConfigDict, TypeAdapter, ValidationError

from hybridvision.errors import UserInputError
from hybridvision.registry import BACKBONE_OPTIONS, model_builder

__all__ = ["keyword_parameters", "check_options", "type_text", "model_parameters", "check_model_options",
           "Fraction", "PositiveFloat", "NonNegativeInt", "PositiveInt", "MAX_GENERATED", "GeneratedCount",
           "PositiveGeneratedCount"]

# Bounded types for signatures whose values come from a config.
Fraction = Annotated[float, at.Gt(0), at.Lt(1)]  # a number in (0, 1)
PositiveFloat = Annotated[float, at.Gt(0)]
NonNegativeInt = Annotated[int, at.Ge(0)]
PositiveInt = Annotated[int, at.Ge(1)]
#: The most items (images, drawings per class) a built-in generator makes: far above any use, and
#: below what would fill memory or run for days (a mistyped `--train 99999999999999999999` hung).
MAX_GENERATED = 1_000_000
GeneratedCount = Annotated[int, at.Ge(0), at.Le(MAX_GENERATED)]
PositiveGeneratedCount = Annotated[int, at.Ge(1), at.Le(MAX_GENERATED)]

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_ADAPTER_CONFIG = ConfigDict(arbitrary_types_allowed=True)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 40, 40


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s annotations evaluated (``from __future__ import annotations`` leaves them as
    text); one that cannot be evaluated is left out (the parameter then takes any value)."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - a name only imported for type checkers: evaluate one by one
        pass
    out = {}
    namespace = getattr(fn, "__globals__", {})
    for name, text in getattr(fn, "__annotations__", {}).items():
        try:
            out[name] = eval(text, namespace) if isinstance(text, str) else text  # noqa: S307 - own source
        except Exception:  # noqa: BLE001
            continue
    return out


def keyword_parameters(*fns: Callable[..., Any] | None, exclude: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``fns`` (the first one's where names repeat; ``self``, ``*args``,
    ``**kwargs`` and ``exclude`` left out), each with its annotation evaluated."""
    skip = {"self", *exclude}
    out: dict[str, inspect.Parameter] = {}
    for fn in fns:
        if fn is None:
            continue
        hints = _hints(fn)
        for name, p in inspect.signature(fn).parameters.items():
            if name in skip or name in out or p.kind in _VARIADIC or p.kind is p.POSITIONAL_ONLY:
                continue
            out[name] = p.replace(annotation=hints.get(name, p.annotation))
    return out


@functools.lru_cache(maxsize=512)
def _adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=_ADAPTER_CONFIG)
    except Exception:  # noqa: BLE001 - a type pydantic cannot check: the value is not checked
        return None


def adapter_for(p: inspect.Parameter) -> TypeAdapter | None:
    """The validator of a parameter's annotation; None when it has none pydantic can check."""
    if p.annotation is inspect.Parameter.empty or p.annotation is Any:
        return None
    try:
        return _adapter(p.annotation)
    except TypeError:  # an unhashable annotation
        return _adapter.__wrapped__(p.annotation)


_BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def type_text(annotation: Any) -> str:
    """What an annotation allows, in words: ``int`` → ``an integer``, ``Fraction`` → ``a number
    > 0, < 1``, ``Literal['a', 'b']`` → ``'a' or 'b'``, ``X | None`` → ``… or null``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any value"
    if origin is Annotated:
        bounds = [f"{sign} {getattr(m, attr)}" for m in args[1:] for kind, attr, sign in _BOUNDS
                  if isinstance(m, (kind, at.Interval)) and getattr(m, attr, None) is not None]
        return type_text(args[0]) + (f" {', '.join(bounds)}" if bounds else "")
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is tuple and args and Ellipsis not in args:  # a fixed length: tuple[float, float]
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin in (list, tuple, set, frozenset) or (origin is not None and origin.__name__ in ("Sequence", "Iterable")):
        inner = [a for a in args if a is not Ellipsis]
        return "a list" + (f" (each {' or '.join(type_text(a) for a in inner)})" if inner else "")
    if origin in (dict, Mapping) or annotation in (dict, Mapping) or (origin and origin.__name__ == "Mapping"):
        return "a mapping"
    if origin is not None and getattr(origin, "__name__", "") == "Callable" or annotation is Callable:
        return "a Python callable (not settable in a config)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _short(value: Any) -> str:
    text = " ".join(_REPR.repr(value).split())
    return text if len(text) <= 60 else text[:59] + "…"


def _reason(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(x) for x in err.get("loc") or () if not isinstance(x, str) or x[:1].islower())
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    return f"at [{where}]: {msg}" if where else msg


def _plain_equal(a: Any, b: Any) -> bool:
    """``a == b`` with tuples and lists alike (a validated ``(1, 2)`` is the config's ``[1, 2]``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_plain_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_plain_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_value(name: str, value: Any, p: inspect.Parameter, *, key: str, owner: str) -> Any:
    """``value`` checked against ``p``'s annotation → the value to use: the original one, or the
    one it reads as where that differs (``"false"`` → False); UserInputError otherwise."""
    adapter = adapter_for(p)
    if adapter is None:
        return value
    where = f"{key}.{name}={_short(value)}"
    try:
        checked = adapter.validate_python(value)
    except ValidationError as e:
        raise UserInputError(f"{where} is not valid for {owner} ({_reason(e)}); allowed: "
                             f"{type_text(p.annotation)}") from None
    if isinstance(value, bool) and not isinstance(checked, bool):  # lax mode reads true as 1
        raise UserInputError(f"{where} is not valid for {owner} (a boolean is not a number); allowed: "
                             f"{type_text(p.annotation)}")
    return value if _plain_equal(value, checked) else _plain(checked)


def check_options(given: Mapping[str, Any], params: Mapping[str, inspect.Parameter], *, key: str,
                  owner: str) -> dict[str, Any]:
    """``given`` checked against ``params`` (:func:`keyword_parameters`) → a copy holding the
    values to use (:func:`check_value`). One UserInputError names the unknown keys with the
    valid ones, else the first invalid value."""
    bad = sorted(k for k in given if k not in params)
    if bad:
        valid = ", ".join(params) or "none"
        raise UserInputError(f"{key} {', '.join(bad)}: not an option of {owner}; valid: {valid}")
    return {k: check_value(k, v, params[k], key=key, owner=owner) for k, v in given.items()}


def model_parameters(name: str, backbone: Mapping[str, inspect.Parameter] | None = None,
                     ) -> dict[str, inspect.Parameter] | None:
    """The options model ``name`` takes: its builder's keyword parameters, the ones it forwards
    (``builder.options``: a mapping of parameters, or names, which then take any value) and the
    ``backbone`` options (:data:`~hybridvision.registry.BACKBONE_OPTIONS`); None when the builder
    forwards ``**kwargs`` without declaring them."""
    builder = model_builder(name)
    own = keyword_parameters(builder)
    forwards = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())
    extra = getattr(builder, "options", None)
    if forwards and extra is None:
        return None
    if isinstance(extra, Mapping):
        own.update({k: v for k, v in extra.items() if k not in own})
    elif extra is not None:
        own.update({k: inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in extra if k not in own})
    any_option = {k: inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in BACKBONE_OPTIONS}
    own.update({k: v for k, v in {**any_option, **(backbone or {})}.items() if k not in own})
    return own


def check_model_options(name: str, kwargs: Mapping[str, Any],
                        backbone: Mapping[str, inspect.Parameter] | None = None) -> dict[str, Any]:
    """``kwargs`` for model ``name`` checked (:func:`check_options` with :func:`model_parameters`)
    → the values to build it with; unchecked (a copy) when the builder cannot tell its options."""
    params = model_parameters(name, backbone)
    if params is None:
        return dict(kwargs)
    return check_options(kwargs, params, key="model_kwargs", owner=f"model {name!r}")
