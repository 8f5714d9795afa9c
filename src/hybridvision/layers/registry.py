"""Attention blocks by name: ``create_attn(name, channels, **kw) -> nn.Module``.

Every registered block maps ``[B, C, H, W] -> [B, C, H, W]``. One dict, not an if/elif chain:
``@register_attn("name")`` on a class or factory ``f(channels, **kw)`` adds it.

A leaf: it imports nothing of the package but the error type. The blocks register when their
modules are imported, and ``hybridvision/layers/__init__.py`` imports every block module; Python
runs a package's ``__init__`` before any of its submodules, so by the time this module can be
used, every block of the package is registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch.nn as nn

from hybridvision.errors import UserInputError

__all__ = ["register_attn", "create_attn", "list_attn"]

_ATTN: dict[str, Callable[..., nn.Module]] = {}


def register_attn(name: str):
    def wrap(factory: Callable[..., nn.Module]):
        if name in _ATTN:
            raise ValueError(f"attention block {name!r} is registered twice")
        _ATTN[name] = factory
        return factory

    return wrap


def list_attn() -> list[str]:
    return sorted(_ATTN)


def create_attn(name: str, channels: int, **kw) -> nn.Module:
    """Build the attention block registered as ``name`` for ``channels`` input channels.

    The block is marked ``keeps_own_init``, so a network's weight init leaves its init alone.
    """
    if name not in _ATTN:
        raise UserInputError(f"unknown attention block {name!r}; known: {', '.join(sorted(_ATTN))}")
    factory = _ATTN[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = sorted(k for k in kw if k not in params)
        if bad:
            valid = ", ".join(k for k in params if k not in ("self", "channels"))
            raise UserInputError(f"attention block {name!r} does not take {', '.join(bad)}; valid: {valid}")
    block = factory(channels, **kw)
    block.keeps_own_init = True  # layers.blocks.KEEPS_OWN_INIT
    return block
