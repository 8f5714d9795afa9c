"""Built-in ``sketches`` dataset: procedurally drawn doodles written as QuickDraw simplified ndjson.

A stand-in for QuickDraw (Ha & Eck, "A Neural Representation of Sketch Drawings", ICLR 2018) that
needs no download: 36 classes of distinguishable shapes (circle, square, house, fish, …), each
drawing made from a class template with per-drawing variation, so that the *real* QuickDraw
reader and rasteriser (:mod:`hybridvision.data.sketch_readers`, :mod:`~hybridvision.data.sketch_raster`)
are what read it.

Per drawing: template control points jittered (plus the template's own random parameters: number
of rays, rungs, peaks, spiral turns, …), strokes randomly split in two, reversed and reordered,
occasionally a short stroke missing (then ``"recognized": false``); then a random affine
(rotation, anisotropic scale, shear), a smooth hand wobble along the pen path, and QuickDraw's
simplified-format normalisation: aligned to the top-left corner, uniformly scaled to a maximum of
255, integer coordinates.

Output (``make_sketches``): ``<class>.ndjson`` per class, one JSON object per line with the real
keys ``word, countrycode, timestamp, recognized, key_id, drawing``, and ``manifest.json`` written
last. Generation is deterministic by seed, prefix-stable (the first n drawings of a class do not
depend on ``per_class``), atomic (temp folder + rename) and fast (thousands of drawings/s).

Template coordinates: unit square, x right, y down (image convention, like QuickDraw).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hybridvision.errors import DataError
from hybridvision.data.builtin.generated import GeneratedSet, write_manifest
from hybridvision.fileio import atomic_replace_dir
from hybridvision.options import NonNegativeInt, PositiveGeneratedCount

__all__ = [
    "SKETCH_CLASSES",
    "DEFAULT_PER_CLASS",
    "VERSION",
    "draw_sketch",
    "make_sketches",
    "ensure_sketches",
    "read_manifest",
]

VERSION = 1  # bump when the drawings change: ensure_sketches then regenerates
DEFAULT_PER_CLASS = 200

_TAU = 2.0 * np.pi
_SPACING = 0.06  # pen-path resampling step before wobble (unit square); ≈ 15 px on the 0–255 canvas
_COUNTRIES = ("US", "GB", "DE", "BR", "CL", "AR", "FR", "JP", "IN", "CA", "AU", "ES", "MX", "KR", "PL")
_EPOCH = _dt.datetime(2017, 3, 1, tzinfo=_dt.timezone.utc)

Strokes = list[np.ndarray]  # each [P, 2] float64, unit square, x right, y down


# -------------------------------------------------------------------------------- primitives
def _arc(c, r, a0: float, sweep: float, n: int) -> np.ndarray:
    """Points on an ellipse arc ``c + r·(cos t, sin t)``, t from a0 over sweep → ``[n, 2]``."""
    t = a0 + sweep * np.linspace(0.0, 1.0, n)
    return np.asarray(c, dtype=np.float64) + np.asarray(r, dtype=np.float64) * np.stack([np.cos(t), np.sin(t)], 1)


def _pts(rng: np.random.Generator, xy, s: float = 0.03) -> np.ndarray:
    """Control points ``[P, 2]`` with Gaussian jitter of std ``s`` (unit square)."""
    a = np.asarray(xy, dtype=np.float64)
    return a + rng.normal(0.0, s, a.shape)


def _closed(p: np.ndarray) -> np.ndarray:
    return np.concatenate([p, p[:1]])


def _polygon_strokes(rng: np.random.Generator, corners: np.ndarray) -> Strokes:
    """A polygon drawn as one closed stroke, two open halves, or one stroke per side."""
    n = len(corners)
    corners = np.roll(corners, -int(rng.integers(n)), axis=0)  # start at any corner
    mode = rng.random()
    if mode < 0.6:
        return [_closed(corners)]
    if mode < 0.8:
        h = n // 2
        return [corners[: h + 1], np.concatenate([corners[h:], corners[:1]])]
    return [np.stack([corners[i], corners[(i + 1) % n]]) for i in range(n)]


# --------------------------------------------------------------------------------- templates
def _circle(rng):
    c = 0.5 + rng.normal(0, 0.02, 2)
    r = 0.45 * (1 + rng.normal(0, 0.05, 2))
    return [_arc(c, r, rng.uniform(0, _TAU), _TAU + rng.uniform(-0.15, 0.45), 28)]


def _square(rng):
    return _polygon_strokes(rng, _pts(rng, [[0, 0], [1, 0], [1, 1], [0, 1]], 0.04))


def _triangle(rng):
    return _polygon_strokes(rng, _pts(rng, [[0.5, 0], [1, 0.87], [0, 0.87]], 0.04))


def _star(rng):
    a = -np.pi / 2 + np.arange(5) * _TAU / 5 + rng.normal(0, 0.04)
    outer = 0.5 + 0.5 * np.stack([np.cos(a), np.sin(a)], 1)
    if rng.random() < 0.3:  # pentagram, drawn without lifting the pen
        return [_closed(_pts(rng, outer[[0, 2, 4, 1, 3]], 0.025))]
    ri = rng.uniform(0.17, 0.26)
    b = a + _TAU / 10
    inner = 0.5 + ri * np.stack([np.cos(b), np.sin(b)], 1)
    v = np.stack([outer, inner], 1).reshape(10, 2)
    return [_closed(_pts(rng, v, 0.02))]


def _house(rng):
    top = rng.uniform(0.4, 0.5)
    body = _pts(rng, [[0.1, top], [0.1, 1], [0.9, 1], [0.9, top]], 0.025)
    roof = _pts(rng, [[0.02, top + 0.02], [0.5, 0.0], [0.98, top + 0.02]], 0.03)
    door = _pts(rng, [[0.42, 1], [0.42, 0.74], [0.58, 0.74], [0.58, 1]], 0.015)
    out = [_closed(body), roof, door]
    if rng.random() < 0.5:
        x0 = rng.choice([0.2, 0.66])
        out.append(_closed(_pts(rng, [[x0, top + 0.12], [x0 + 0.14, top + 0.12], [x0 + 0.14, top + 0.26],
                                      [x0, top + 0.26]], 0.01)))
    return out


def _arrow(rng):
    shaft = _pts(rng, [[0, 0.5], [1, 0.5]], 0.03)
    hl = rng.uniform(0.2, 0.32)
    head = _pts(rng, [[1 - hl, 0.5 - hl], shaft[1], [1 - hl, 0.5 + hl]], 0.02)
    return [shaft, head]


def _spiral(rng):
    turns = rng.uniform(2.2, 3.5)
    n = int(16 * turns) + 8
    t = np.linspace(0, 1, n)
    th = rng.uniform(0, _TAU) + rng.choice([-1.0, 1.0]) * _TAU * turns * t
    r = 0.5 * (0.04 + 0.96 * t)
    return [0.5 + r[:, None] * np.stack([np.cos(th), np.sin(th)], 1)]


def _zigzag(rng):
    k = int(rng.integers(5, 9))
    x = np.linspace(0, 1, k)
    y = np.where(np.arange(k) % 2 == 0, 0.3, 0.7)
    return [_pts(rng, np.stack([x, y], 1), 0.03)]


def _cross(rng):
    return [_pts(rng, [[0.5, 0], [0.5, 1]], 0.04), _pts(rng, [[0, 0.5], [1, 0.5]], 0.04)]


def _heart(rng):
    t = np.linspace(0, _TAU, 40)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = 0.5 + np.stack([x * rng.uniform(0.9, 1.1), y], 1) / 34.0
    if rng.random() < 0.4:  # two halves, both from the top dip
        return [p[:21], p[20:][::-1]]
    return [p]


def _moon(rng):
    # Crescent: the left part of a circle minus a circle shifted right, as one closed stroke.
    alpha = np.pi - np.deg2rad(rng.uniform(70, 85))  # tip angle; y down, so -alpha is the upper tip
    outer = _arc([0.5, 0.5], [0.45, 0.45], -alpha, -(_TAU - 2 * alpha), 24)  # upper tip → left → lower tip
    lo, hi = outer[-1], outer[0]
    c2 = np.array([0.5 + rng.uniform(0.12, 0.22), 0.5])  # the shift sets the crescent's thickness
    r2 = float(np.hypot(*(hi - c2)))
    b0 = np.arctan2(lo[1] - c2[1], lo[0] - c2[0])
    b1 = np.arctan2(hi[1] - c2[1], hi[0] - c2[0])
    inner = _arc(c2, [r2, r2], b0, (b1 - b0) % _TAU, 20)  # lower tip → left → upper tip
    return [np.concatenate([outer, inner[1:]])]


def _cloud(rng):
    k = int(rng.integers(5, 9))
    th = rng.uniform(0, _TAU) + np.linspace(0, _TAU, 64)
    r = 1 + rng.uniform(0.12, 0.2) * np.abs(np.sin(k * th / 2))
    rx, ry = 0.5, rng.uniform(0.27, 0.33)
    return [0.5 + np.stack([rx * r * np.cos(th), ry * r * np.sin(th)], 1) / 1.2]


def _sun(rng):
    r0 = rng.uniform(0.17, 0.23)
    out = [_arc(0.5 + rng.normal(0, 0.01, 2), [r0, r0], rng.uniform(0, _TAU), _TAU + 0.2, 20)]
    k = int(rng.integers(6, 11))
    phi = rng.uniform(0, _TAU) + np.arange(k) * _TAU / k + rng.normal(0, 0.06, k)
    a, b = r0 + 0.08, rng.uniform(0.42, 0.5)
    for f in phi:
        u = np.array([np.cos(f), np.sin(f)])
        out.append(_pts(rng, [0.5 + a * u, 0.5 + b * u], 0.012))
    return out


def _tree(rng):
    if rng.random() < 0.7:  # round canopy
        k = int(rng.integers(6, 10))
        th = np.linspace(0, _TAU, 56) + rng.uniform(0, _TAU)
        r = 0.3 * (1 + 0.12 * np.abs(np.sin(k * th / 2)))
        crown = np.array([0.5, 0.33]) + np.stack([r * np.cos(th), r * np.sin(th)], 1)
        y0 = 0.6
    else:  # pine
        crown = _closed(_pts(rng, [[0.5, 0], [0.9, 0.72], [0.1, 0.72]], 0.03))
        y0 = 0.72
    trunk_l = _pts(rng, [[0.43, y0], [0.42, 1]], 0.01)
    trunk_r = _pts(rng, [[0.57, y0], [0.58, 1]], 0.01)
    if rng.random() < 0.5:
        return [crown, np.concatenate([trunk_l, trunk_r[::-1]])]
    return [crown, trunk_l, trunk_r]


def _fish(rng):
    h = rng.uniform(0.2, 0.3)
    t = np.linspace(0, 1, 16)
    x = 0.72 * t
    upper = np.stack([x, 0.5 - h * np.sin(np.pi * t)], 1)
    lower = np.stack([x, 0.5 + h * np.sin(np.pi * t)], 1)
    tail = _pts(rng, [[0.72, 0.5], [1, 0.5 - rng.uniform(0.18, 0.26)], [1, 0.5 + rng.uniform(0.18, 0.26)],
                      [0.72, 0.5]], 0.02)
    body = [np.concatenate([upper, lower[::-1][1:]])] if rng.random() < 0.6 else [upper, lower]
    eye = _arc([0.18, 0.45], [0.035, 0.035], 0, _TAU, 8) if rng.random() < 0.6 else _pts(rng, [[0.18, 0.45]], 0.01)
    return body + [tail, eye]


def _ladder(rng):
    out = [_pts(rng, [[0.25, 0], [0.25, 1]], 0.02), _pts(rng, [[0.75, 0], [0.75, 1]], 0.02)]
    k = int(rng.integers(3, 7))
    for y in (np.arange(k) + 0.5) / k:
        out.append(_pts(rng, [[0.25, y], [0.75, y]], 0.015))
    return out


def _wave(rng):
    c = rng.uniform(1.5, 3.0)
    x = np.linspace(0, 1, 48)
    y = 0.5 + 0.2 * np.sin(_TAU * c * x + rng.uniform(0, _TAU))
    out = [np.stack([x, y], 1)]
    if rng.random() < 0.3:
        out.append(out[0] + [0, 0.3])
    return out


def _diamond(rng):
    w = rng.uniform(0.3, 0.4)
    return _polygon_strokes(rng, _pts(rng, [[0.5, 0], [0.5 + w, 0.5], [0.5, 1], [0.5 - w, 0.5]], 0.025))


def _hexagon(rng):
    a = np.arange(6) * _TAU / 6 + rng.choice([0.0, _TAU / 12])
    return _polygon_strokes(rng, _pts(rng, 0.5 + 0.5 * np.stack([np.cos(a), np.sin(a)], 1), 0.02))


def _lightning(rng):
    v = [[0.58, 0], [0.22, 0.55], [0.48, 0.55], [0.36, 1], [0.8, 0.4], [0.54, 0.4], [0.75, 0]]
    return [_closed(_pts(rng, v, 0.02))]


def _smiley(rng):
    out = [_arc([0.5, 0.5], [0.5, 0.5], rng.uniform(0, _TAU), _TAU + 0.15, 28)]
    for x in (0.33, 0.67):
        if rng.random() < 0.5:
            out.append(_arc([x, 0.36], [0.045, 0.045], 0, _TAU, 8))
        else:
            out.append(_pts(rng, [[x, 0.3], [x, 0.42]], 0.01))
    a = rng.uniform(0.15, 0.35) * np.pi
    out.append(_arc([0.5, 0.5], [0.28, 0.24], a, np.pi - 2 * a, 12))
    return out


def _envelope(rng):
    c = _pts(rng, [[0, 0.15], [1, 0.15], [1, 0.85], [0, 0.85]], 0.025)
    flap = np.stack([c[0], _pts(rng, [[0.5, rng.uniform(0.5, 0.62)]], 0.02)[0], c[1]])
    return _polygon_strokes(rng, c) + [flap]


def _umbrella(rng):
    top = _arc([0.5, 0.45], [0.5, rng.uniform(0.35, 0.45)], np.pi, np.pi, 20)  # left → over → right
    k = int(rng.integers(3, 6))
    w = 1.0 / k
    scallops = [_arc([1 - (i + 0.5) * w, 0.45], [w / 2, 0.06], 0, -np.pi, 7) for i in range(k)]
    canopy = np.concatenate([top] + scallops)
    handle = np.concatenate([_pts(rng, [[0.5, 0.45], [0.5, 0.9]], 0.01),
                             _arc([0.43, 0.9], [0.07, 0.07], 0, np.pi, 7)])
    return [canopy, handle]


def _flower(rng):
    c = np.array([0.5, 0.34])
    out = [_arc(c, [0.09, 0.09], 0, _TAU, 12)]
    k = int(rng.integers(5, 9))
    phi0 = rng.uniform(0, _TAU)
    t = np.linspace(0, _TAU, 12)
    for i in range(k):
        f = phi0 + i * _TAU / k
        rot = np.array([[np.cos(f), -np.sin(f)], [np.sin(f), np.cos(f)]])
        loop = np.stack([0.2 + 0.11 * np.cos(t), 0.065 * np.sin(t)], 1) @ rot.T  # petal along direction f
        out.append(c + loop)
    if rng.random() < 0.75:
        out.append(_pts(rng, [[0.5, 0.65], [0.5, 1]], 0.015))
    return out


def _cup(rng):
    body = _pts(rng, [[0.08, 0.1], [0.16, 0.95], [0.66, 0.95], [0.74, 0.1]], 0.02)
    rim = _pts(rng, [body[0], body[3]], 0.01) if rng.random() < 0.6 else _arc(
        (body[0] + body[3]) / 2, [0.33, 0.05], 0, _TAU, 16)
    handle = _arc([0.7, 0.5], [0.2, 0.2], -np.pi / 2, np.pi, 10)  # from the body's right side, out and back
    return [body, rim, handle]


def _eye(rng):
    h = rng.uniform(0.3, 0.4)
    t = np.linspace(0, 1, 16)
    upper = np.stack([t, 0.5 - h * np.sin(np.pi * t)], 1)
    lower = np.stack([t, 0.5 + h * np.sin(np.pi * t)], 1)
    r = rng.uniform(0.14, 0.2)
    out = [upper, lower, _arc([0.5, 0.5], [r, r], rng.uniform(0, _TAU), _TAU, 16)]
    if rng.random() < 0.5:
        out.append(_arc([0.5, 0.5], [0.05, 0.05], 0, _TAU, 8))
    return out


def _table(rng):
    top = rng.uniform(0.2, 0.3)
    out = [_closed(_pts(rng, [[0, top - 0.08], [1, top - 0.08], [1, top], [0, top]], 0.015))
           if rng.random() < 0.5 else _pts(rng, [[0, top], [1, top]], 0.02)]
    out += [_pts(rng, [[0.1, top], [0.1, 1]], 0.015), _pts(rng, [[0.9, top], [0.9, 1]], 0.015)]
    if rng.random() < 0.4:
        out += [_pts(rng, [[0.25, top], [0.25, 0.85]], 0.01), _pts(rng, [[0.75, top], [0.75, 0.85]], 0.01)]
    return out


def _hourglass(rng):
    return [_closed(_pts(rng, [[0.15, 0], [0.85, 0], [0.15, 1], [0.85, 1]], 0.025))]


def _mountain(rng):
    k = int(rng.integers(2, 4))  # peaks
    x = np.linspace(0, 1, 2 * k + 1)
    y = np.where(np.arange(2 * k + 1) % 2 == 1, rng.uniform(0.0, 0.3, 2 * k + 1), rng.uniform(0.5, 0.7, 2 * k + 1))
    y[0] = y[-1] = 1.0
    out = [_pts(rng, np.stack([x, y], 1), 0.02)]
    if rng.random() < 0.5:
        out.append(_pts(rng, [[0, 1], [1, 1]], 0.01))
    return out


def _stairs(rng):
    k = int(rng.integers(3, 6))
    v = [[0.0, 1.0]]
    for i in range(k):
        y = 1 - (i + 1) / k
        v += [[i / k, y], [(i + 1) / k, y]]
    v += [[1.0, 1.0]]
    if rng.random() < 0.6:
        return [_closed(_pts(rng, v, 0.012))]
    return [_pts(rng, v, 0.012), _pts(rng, [[1, 1], [0, 1]], 0.01)]


def _car(rng):
    body = _pts(rng, [[0, 0.75], [0, 0.45], [0.22, 0.42], [0.32, 0.15], [0.7, 0.15], [0.82, 0.42],
                      [1, 0.47], [1, 0.75]], 0.02)
    out = [_closed(body)] if rng.random() < 0.5 else [body]
    r = rng.uniform(0.1, 0.13)
    for x in (0.25, 0.75):
        out.append(_arc([x, 0.78], [r, r], rng.uniform(0, _TAU), _TAU, 14))
    return out


def _clock(rng):
    out = [_arc([0.5, 0.5], [0.5, 0.5], rng.uniform(0, _TAU), _TAU + 0.1, 28)]
    f = rng.uniform(0, _TAU)
    out.append(_pts(rng, [[0.5, 0.12], [0.5, 0.5], [0.5 + 0.25 * np.cos(f), 0.5 + 0.25 * np.sin(f)]], 0.01))
    if rng.random() < 0.4:
        for g in np.arange(4) * np.pi / 2:
            u = np.array([np.cos(g), np.sin(g)])
            out.append(_pts(rng, [0.5 + 0.4 * u, 0.5 + 0.47 * u], 0.005))
    return out


def _grid(rng):
    return [_pts(rng, [[0.33, 0], [0.33, 1]], 0.03), _pts(rng, [[0.67, 0], [0.67, 1]], 0.03),
            _pts(rng, [[0, 0.33], [1, 0.33]], 0.03), _pts(rng, [[0, 0.67], [1, 0.67]], 0.03)]


def _infinity(rng):
    t = rng.uniform(0, _TAU) + np.linspace(0, _TAU, 48)
    d = 1 + np.sin(t) ** 2
    return [0.5 + 0.5 * np.stack([np.cos(t) / d, rng.uniform(1.0, 1.3) * np.sin(t) * np.cos(t) / d], 1)]


def _snowman(rng):
    rb, rt = rng.uniform(0.27, 0.32), rng.uniform(0.16, 0.2)
    out = [_arc([0.5, 1 - rb], [rb, rb], rng.uniform(0, _TAU), _TAU, 24),
           _arc([0.5, 1 - 2 * rb - rt], [rt, rt], rng.uniform(0, _TAU), _TAU, 18)]
    if rng.random() < 0.4:
        yt = 1 - 2 * rb - rt
        out += [_pts(rng, [[0.45, yt - 0.04]], 0.005), _pts(rng, [[0.55, yt - 0.04]], 0.005)]
    return out


def _key(rng):
    r = rng.uniform(0.17, 0.22)
    out = [_arc([r, 0.5], [r, r], rng.uniform(0, _TAU), _TAU, 16), _pts(rng, [[2 * r, 0.5], [1, 0.5]], 0.01)]
    out += [_pts(rng, [[0.93, 0.5], [0.93, 0.75]], 0.01), _pts(rng, [[0.8, 0.5], [0.8, 0.7]], 0.01)]
    return out


_TEMPLATES: dict[str, Callable[[np.random.Generator], Strokes]] = {
    "circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "house": _house,
    "arrow": _arrow, "spiral": _spiral, "zigzag": _zigzag, "cross": _cross, "heart": _heart,
    "moon": _moon, "cloud": _cloud, "sun": _sun, "tree": _tree, "fish": _fish, "ladder": _ladder,
    "wave": _wave, "diamond": _diamond, "hexagon": _hexagon, "lightning": _lightning,
    "smiley": _smiley, "envelope": _envelope, "umbrella": _umbrella, "flower": _flower, "cup": _cup,
    "eye": _eye, "table": _table, "hourglass": _hourglass, "mountain": _mountain, "stairs": _stairs,
    "car": _car, "clock": _clock, "grid": _grid, "infinity": _infinity, "snowman": _snowman, "key": _key,
}
SKETCH_CLASSES: tuple[str, ...] = tuple(sorted(_TEMPLATES))


# --------------------------------------------------------------------------------- variation
def _restructure(rng: np.random.Generator, strokes: Strokes) -> tuple[Strokes, bool]:
    """Random stroke split, occasional missing short stroke, reversals and reordering."""
    strokes = list(strokes)
    if rng.random() < 0.25:  # lift the pen somewhere along one stroke
        i = int(rng.integers(len(strokes)))
        s = strokes[i]
        if len(s) >= 2:
            j = int(rng.integers(len(s) - 1))
            q = s[j] + rng.uniform(0.25, 0.75) * (s[j + 1] - s[j])
            strokes[i : i + 1] = [np.concatenate([s[: j + 1], q[None]]), np.concatenate([q[None], s[j + 1 :]])]
    dropped = False
    if len(strokes) >= 3 and rng.random() < 0.08:
        # Forget one of the shorter strokes (a door, an eye, a ray): the class stays recognisable.
        lengths = np.array([np.hypot(*np.diff(s, axis=0).T).sum() if len(s) > 1 else 0.0 for s in strokes])
        short = np.flatnonzero(lengths <= np.median(lengths))
        del strokes[int(rng.choice(short))]
        dropped = True
    flips = rng.random(len(strokes)) < 0.3
    strokes = [s[::-1] if f else s for s, f in zip(strokes, flips)]
    if rng.random() < 0.5:
        strokes = [strokes[i] for i in rng.permutation(len(strokes))]
    return strokes, dropped


def _to_canvas(rng: np.random.Generator, strokes: Strokes) -> list[list[list[int]]]:
    """Densify, random affine, wobble, QuickDraw normalisation → ``[[xs], [ys]]`` int strokes."""
    lens = np.fromiter((len(s) for s in strokes), dtype=np.int64, count=len(strokes))
    p = np.concatenate(strokes)  # [P, 2]
    start = np.zeros(len(p), dtype=bool)
    start[np.concatenate([[0], np.cumsum(lens)[:-1]])] = True

    # Resample every segment inside a stroke to ≤ _SPACING so the wobble has points to move.
    d = p[1:] - p[:-1]  # [P-1, 2]; segments across a stroke boundary get one (dropped) piece
    k = np.where(start[1:], 1, np.maximum(1, np.ceil(np.hypot(d[:, 0], d[:, 1]) / _SPACING))).astype(np.int64)
    seg = np.repeat(np.arange(len(d)), k)
    first = np.repeat(np.cumsum(k) - k, k)
    frac = (np.arange(len(seg)) - first) / np.repeat(k, k)
    q = np.concatenate([p[seg] + d[seg] * frac[:, None], p[-1:]])  # [Q, 2]
    q_start = np.concatenate([start[seg] & (frac == 0), start[-1:]])  # [Q] first point of a stroke

    # Random affine: rotation ±~10°, anisotropic scale, shear (translation is normalised away).
    th = np.clip(rng.normal(0, 0.15), -0.3, 0.3)
    sx, sy = np.exp(rng.normal(0, 0.12, 2))
    sh = rng.normal(0, 0.08)
    c, s = np.cos(th), np.sin(th)
    a = np.array([[c, -s], [s, c]]) @ np.array([[1, sh], [0, 1]]) @ np.diag([sx, sy])
    q = q @ a.T

    # Hand wobble: a smooth displacement along the pen path (arclength), plus a little tremor.
    step = np.hypot(*np.diff(q, axis=0).T)
    arc = np.concatenate([[0], np.cumsum(step)])
    amp = rng.uniform(0.005, 0.025)
    f = rng.uniform(4, 12, 2)
    ph = rng.uniform(0, _TAU, 2)
    q = q + amp * np.stack([np.sin(f[0] * arc + ph[0]), np.sin(f[1] * arc + ph[1])], 1)
    q = q + rng.normal(0, 0.003, q.shape)

    # QuickDraw simplified normalisation: top-left aligned, max extent scaled to 255, integers.
    q = q - q.min(0)
    q = np.rint(q * (255.0 / max(float(q.max()), 1e-6))).astype(np.int64)
    keep = q_start.copy()
    keep[1:] |= np.any(q[1:] != q[:-1], axis=1)  # drop repeated points inside a stroke
    q, q_start = q[keep], q_start[keep]
    bounds = np.concatenate([np.flatnonzero(q_start), [len(q)]]).tolist()
    xs, ys = q[:, 0].tolist(), q[:, 1].tolist()
    return [[xs[a:b], ys[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]


def draw_sketch(name: str, rng: np.random.Generator) -> tuple[list[list[list[int]]], bool]:
    """One drawing of class ``name`` → ``(QuickDraw strokes [[xs], [ys]], recognized)``."""
    strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in _TEMPLATES[name](rng)]
    strokes, dropped = _restructure(rng, strokes)
    return _to_canvas(rng, strokes), not dropped


def _class_lines(name: str, n: int, seed: int) -> list[str]:
    # One generator per (seed, class) consumed in order: drawing i depends only on drawings < i,
    # so a larger per_class extends a smaller one (prefix-stable).
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    lines = []
    for _ in range(n):
        drawing, recognized = draw_sketch(name, rng)
        t = _EPOCH + _dt.timedelta(seconds=float(rng.uniform(0, 90 * 86400)))
        rec = {
            "word": name,
            "countrycode": _COUNTRIES[int(rng.integers(len(_COUNTRIES)))],
            "timestamp": t.strftime("%Y-%m-%d %H:%M:%S.%f UTC"),
            "recognized": recognized,
            "key_id": str(int(rng.integers(4_000_000_000_000_000, 6_700_000_000_000_000))),
            "drawing": drawing,
        }
        lines.append(json.dumps(rec, separators=(",", ":")))
    return lines


# ----------------------------------------------------------------------------- files on disk
def _class_files(root: Path) -> bool:
    """A generation of an old version whose manifest was lost: one ``<class>.ndjson`` per class, nothing else."""
    generated = {f"{name}.ndjson" for name in SKETCH_CLASSES}
    present = {p.name for p in root.iterdir()}
    return present == generated and all((root / n).is_file() for n in present)


# The one manifest rule of every generated set (generated.py): "files" maps each class to its file.
SKETCHES = GeneratedSet("sketches", owns=lambda m: m.get("name") == "sketches",
                        files=lambda m: m["files"].values(), legacy=_class_files)


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a generated folder, or ``None`` when absent, unreadable (= incomplete) or not ours."""
    return SKETCHES.read_manifest(root)


def make_sketches(out_dir: str | os.PathLike, *, per_class: PositiveGeneratedCount = DEFAULT_PER_CLASS,
                  seed: NonNegativeInt = 0) -> dict[str, Any]:
    """Generate the built-in sketches into ``out_dir`` (replacing an earlier generation) → the manifest.

    Writes ``<class>.ndjson`` for every class of :data:`SKETCH_CLASSES` into a temporary sibling
    folder, ``manifest.json`` last, then renames it into place, so a reader never sees a partial
    dataset (a folder with a manifest is complete). ``out_dir`` must be absent, empty, or an
    earlier generation holding only its own files, unedited (the rule of every generated set:
    :mod:`hybridvision.data.builtin.generated`): any other folder is left untouched
    (:class:`UserInputError` naming the user's file).
    """
    if per_class < 1:
        raise DataError(f"per_class {per_class}: generate at least 1 drawing per class")
    out = Path(out_dir)
    SKETCHES.check_replaceable(out, fix=f"move it out, choose another folder (--out, or data_root for "
                                        f"builtin:sketches), or delete {out}")

    def fill(tmp: Path) -> dict[str, Any]:
        counts = {}
        for name in SKETCH_CLASSES:
            lines = _class_lines(name, per_class, seed)
            (tmp / f"{name}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
            counts[name] = len(lines)
        manifest = {
            "name": "sketches",
            "version": VERSION,
            "format": "quickdraw-simplified-ndjson",
            "generator": __name__,
            "per_class": per_class,
            "seed": seed,
            "classes": list(SKETCH_CLASSES),
            "files": {name: f"{name}.ndjson" for name in SKETCH_CLASSES},
            "counts": counts,
            "num_drawings": sum(counts.values()),
        }
        return write_manifest(tmp, manifest)  # every file's SHA-256, the manifest last: complete

    return atomic_replace_dir(out, fill, is_ours=SKETCHES.is_ours)


def ensure_sketches(root: str | os.PathLike, *, per_class: int = DEFAULT_PER_CLASS, seed: int = 0) -> dict[str, Any]:
    """Reuse ``root`` when it holds a complete generation with this ``seed``, the current
    :data:`VERSION` and at least ``per_class`` drawings per class; otherwise (re)generate it."""
    m = SKETCHES.reusable(root, lambda m: m.get("version") == VERSION and m.get("seed") == seed
                          and int(m.get("per_class", 0)) >= per_class and m.get("classes") == list(SKETCH_CLASSES))
    return m if m is not None else make_sketches(root, per_class=per_class, seed=seed)
