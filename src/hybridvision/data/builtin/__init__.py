"""Built-in datasets generated locally (nothing is downloaded)."""

from hybridvision.data.builtin.amounts import ensure_amounts, make_amounts, read_manifest

__all__ = ["ensure_amounts", "make_amounts", "read_manifest"]
