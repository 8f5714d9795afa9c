"""The one cap on how much neighbouring tiles may overlap, for every command that tiles an image.

Sliced prediction (:mod:`hybridvision.engine.tiling`, ``predict --tile-overlap``) and slicing a
dataset for training (:mod:`hybridvision.data.slicing`, ``data slice --overlap``) both step tiles
by ``(1 - overlap)`` of a tile, so both share this limit. A leaf module (it imports only the error
type) so that data, which must not import the engine, and the engine can both use it.
"""

from __future__ import annotations

import math

from hybridvision.errors import UserInputError

__all__ = ["MAX_TILE_OVERLAP", "check_tile_overlap"]

# The most overlap allowed: a tile step of a tenth of a tile, so at most ~100 times the tiles of
# touching tiles. More gains nothing (SAHI uses 0.2) and grows the work without bound: at 0.999 a
# 2000 px image in 512 px windows needed over two million windows, a run that never ended.
MAX_TILE_OVERLAP = 0.9


def check_tile_overlap(overlap: float, option: str = "--tile-overlap", unit: str = "window") -> float:
    """``overlap`` as a float if it is a real number in ``[0, MAX_TILE_OVERLAP]``.

    Args:
        overlap: the fraction of a tile shared with its neighbour.
        option: the option named in the message (``--tile-overlap``, ``--overlap``).
        unit: what a tile is called where the option is used (``window``, ``tile``).

    Raises:
        UserInputError: one line naming the option, the value and the range, for a value that is
            not a finite number (a bool included) or lies outside the range.
    """
    number = isinstance(overlap, (int, float)) and not isinstance(overlap, bool)
    if not (number and math.isfinite(overlap) and 0.0 <= overlap <= MAX_TILE_OVERLAP):
        shown = f"{overlap:g}" if number else repr(overlap)
        raise UserInputError(f"{option} {shown}: use a fraction of a {unit} in [0, {MAX_TILE_OVERLAP:g}] "
                             f"(more overlap multiplies the {unit}s without a gain), e.g. 0.5 or 0.2")
    return float(overlap)
