"""Attention blocks by name: ``create_attn(name, channels, **kw) -> nn.Module``.

Every registered block maps ``[B, C, H, W] -> [B, C, H, W]``. One dict, not an if/elif chain:
``@register_attn("name")`` on a class or factory ``f(channels, **kw)`` adds it.
"""

from __future__ import annotations

from typing import Callable

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


def _ensure_loaded() -> None:
    import hybridvision.layers  # noqa: F401  (imports every block module)


def list_attn() -> list[str]:
    _ensure_loaded()
    return sorted(_ATTN)


def create_attn(name: str, channels: int, **kw) -> nn.Module:
    """Build the attention block registered as ``name`` for ``channels`` input channels."""
    _ensure_loaded()
    if name not in _ATTN:
        raise UserInputError(f"unknown attention block {name!r}; known: {', '.join(sorted(_ATTN))}")
    return _ATTN[name](channels, **kw)
