"""Building blocks: attention (non-local family, SAN), residual blocks.

Importing this package registers every attention block with :func:`create_attn`.
"""

import hybridvision.layers.attention  # noqa: F401  non-local family
import hybridvision.layers.san  # noqa: F401  SAN pairwise / patchwise
from hybridvision.layers.registry import create_attn, list_attn, register_attn

__all__ = ["create_attn", "list_attn", "register_attn"]
