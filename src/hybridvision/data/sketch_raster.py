"""The stroke rasteriser of the sketch data: QuickDraw strokes drawn as a greyscale image.

QuickDraw simplified coordinates live on a 256×256 canvas (integers 0–255, x right, y down; Ha &
Eck 2017); the rasteriser maps canvas cell ``c`` to output ``padding + (c + 0.5) · (size − 2·padding) / 256``.

**Raw sketches are black strokes on white**, uint8 (0 = ink, 255 = paper), as TU-Berlin's PNGs and
as people see sketches; :func:`rasterize_strokes` draws this way (the readers of
:mod:`hybridvision.data.sketch_readers` keep the same polarity). The *model input* convention
(strokes high, MNIST style) is applied by the transforms in
:mod:`hybridvision.data.classification_transforms`, which invert before normalising.

Symbols: P points, S strokes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from hybridvision.errors import UserInputError

__all__ = ["QUICKDRAW_CANVAS", "rasterize_strokes", "rasterize_polylines", "strokes_to_arrays"]

QUICKDRAW_CANVAS = 256  # simplified strokes are integers in [0, 255] on a 256×256 canvas


def _default_line_width(size: int) -> float:
    # ≈ 3 px at 256 px: close to how QuickDraw's own 28×28 bitmaps look after upscaling.
    return max(1.0, 3.0 * size / QUICKDRAW_CANVAS)


def rasterize_polylines(
    strokes: Sequence[np.ndarray],
    size: int,
    line_width: float | None,
    padding: int | None,
    supersample: int,
    center: bool,
) -> np.ndarray:
    """Polylines ``[P_s, 2]`` in canvas units → uint8 ``[size, size]``, black ink on white."""
    if size < 1:
        raise UserInputError(f"rasterize size {size}: use a positive image size")
    lw = _default_line_width(size) if line_width is None else float(line_width)
    if lw <= 0:
        raise UserInputError(f"line_width {line_width}: use a positive width in output pixels")
    pad = round(size / 32) if padding is None else int(padding)
    if not 0 <= 2 * pad < size:
        raise UserInputError(f"padding {padding}: use 0 <= padding < size/2 (size {size})")
    k = max(1, int(supersample))
    big = size * k
    scale = (size - 2 * pad) * k / QUICKDRAW_CANVAS  # canvas unit → supersampled pixels
    shift = np.zeros(2, dtype=np.float64)
    if center and len(strokes):
        # Centre the drawing's bounding box on the canvas (QuickDraw aligns it top-left).
        pts = np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes])  # [P, 2]
        lo, hi = pts.min(0), pts.max(0)
        shift = (QUICKDRAW_CANVAS - 1 - (hi - lo)) / 2 - lo
    offset = pad * k + 0.5 * scale  # cell centres: canvas integer c sits at the centre of its cell

    img = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(img)
    w = max(1, round(lw * k))
    r = w / 2
    for s in strokes:
        xy = (np.asarray(s, dtype=np.float64) + shift) * scale + offset  # [P, 2] pixels
        if len(xy) == 0:
            continue
        if len(xy) > 1:
            draw.line(xy.ravel().tolist(), fill=0, width=w)
        if w > 2 or len(xy) == 1:
            # Round caps and joins (PIL lines end square): stamp a disc at every vertex.
            for x, y in xy.tolist():
                draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    if k > 1:
        img = img.reduce(k)  # box filter: the supersampled coverage becomes anti-aliased grey
    return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)


def strokes_to_arrays(drawing: Sequence, where: str = "drawing") -> list[np.ndarray]:
    """QuickDraw ``[[xs], [ys](, [ts])]`` strokes → float32 ``[P, 2]`` arrays, validated."""
    if not isinstance(drawing, (list, tuple)) or len(drawing) == 0:
        raise ValueError(f"{where} must be a non-empty list of strokes [[x0,x1,...],[y0,y1,...]]")
    out = []
    for j, stroke in enumerate(drawing):
        if not isinstance(stroke, (list, tuple)) or len(stroke) not in (2, 3):
            raise ValueError(f"{where} stroke {j} must be [[xs],[ys]] (or [[xs],[ys],[ts]] for raw data)")
        xs, ys = stroke[0], stroke[1]
        if not isinstance(xs, (list, tuple)) or not isinstance(ys, (list, tuple)):
            raise ValueError(f"{where} stroke {j}: xs and ys must be lists of numbers")
        if len(xs) != len(ys) or len(xs) == 0:
            raise ValueError(f"{where} stroke {j}: xs and ys must be non-empty and of equal length "
                             f"(got {len(xs)} and {len(ys)})")
        try:
            pts = np.array([xs, ys], dtype=np.float32).T  # [P, 2]
        except (TypeError, ValueError):
            raise ValueError(f"{where} stroke {j}: coordinates must be numbers") from None
        if not np.isfinite(pts).all():
            raise ValueError(f"{where} stroke {j}: coordinates must be finite numbers")
        out.append(pts)
    return out


def rasterize_strokes(
    drawing: Sequence,
    size: int = 224,
    line_width: float | None = None,
    padding: int | None = None,
    *,
    supersample: int = 2,
    center: bool = False,
) -> np.ndarray:
    """Draw QuickDraw simplified strokes as a ``size × size`` sketch, black ink on white paper.

    The 256×256 QuickDraw canvas (Ha & Eck, "A Neural Representation of Sketch Drawings",
    ICLR 2018) is scaled into the output inside ``padding`` pixels; strokes are polylines with
    round joins and caps, drawn ``supersample`` × larger and box-filtered down (anti-aliasing).

    Args:
        drawing: list of strokes ``[[x0, x1, …], [y0, y1, …]]`` (a third list of times, as in
            the raw format, is ignored), coordinates in 0–255.
        size: output side in pixels.
        line_width: stroke width in output pixels; default ``3 · size / 256`` (at least 1).
        padding: blank margin in output pixels; default ``round(size / 32)``.
        supersample: drawing scale for anti-aliasing (1 = aliased, hard 0/255 pixels).
        center: centre the drawing's bounding box on the canvas (QuickDraw aligns it top-left).

    Returns:
        uint8 ``[size, size]``: 255 = paper (white), 0 = ink (black).
    """
    try:
        strokes = strokes_to_arrays(drawing)
    except ValueError as e:
        raise UserInputError(f"rasterize_strokes: {e}") from None
    return rasterize_polylines(strokes, size, line_width, padding, supersample, center)

