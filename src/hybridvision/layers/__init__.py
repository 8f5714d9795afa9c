"""Building blocks: attention (non-local family, SAN), pooling, residual blocks."""

import importlib

from hybridvision.layers.registry import create_attn, list_attn, register_attn

for _mod in ("attention", "san"):
    try:
        importlib.import_module(f"hybridvision.layers.{_mod}")
    except ModuleNotFoundError as e:
        if e.name != f"hybridvision.layers.{_mod}":
            raise

__all__ = ["create_attn", "list_attn", "register_attn"]
