"""Stored references of every registered detector: raw outputs and decoded detections for fixed weights.

Made before the layers / typed-contracts refactor (issue 25), on the code of that time, with::

    python tests/detector_references.py --write [--force]

which writes ``tests/data/detector_references.safetensors`` (``--force`` to replace it);
``tests/test_detector_references.py`` rebuilds every detector and checks that it still gives the
same raw outputs and detections, and still loads a checkpoint saved in the key layout of that time.
``python tests/detector_references.py NAME...`` prints what would be stored, writing nothing.

What is pinned, and how, so that the reference survives moving code around:

* **Weights by name.** Every floating state-dict entry is drawn from a generator seeded by the
  CRC32 of its *key* (:func:`named_value`), not from a seeded init (which depends on the order
  modules are created in). Integer buffers (BatchNorm's ``num_batches_tracked``) are 0; the
  input statistics ``pixel_mean`` / ``pixel_std`` are stored as they were.
* **The checkpoint layout.** ``NAME/layout`` (zlib-compressed JSON, uint8) holds the name, dtype
  and shape of every state-dict entry as a checkpoint saved then holds them. The test makes that
  old checkpoint from the stored names (:func:`old_checkpoint`) and loads it with
  ``strict=True`` — through :func:`hybridvision.api.load_trained` from a ``.safetensors`` file
  and its JSON sidecar for the detectors under :data:`FILE_PARAMETERS` parameters (every family
  has some), through ``load_state_dict`` for the bigger ones — so a renamed parameter must be
  mapped by the loader, or the test fails.
* **Raw outputs.** Every tensor of the output dict, lists flattened with their index
  (``NAME/out.KEY.I``; a plain tensor is ``NAME/out.KEY``), as float32 NCHW, for a batch of two
  images of different sizes (the second is padded; :func:`image_sizes`) at the smallest multiple
  of the model's ``size_divisible`` at or above 64×96 (:func:`input_size`: 128×128 for the
  hourglass presets).
* **Detections.** ``model.decode`` with the detector's *default* decoding options, applied to the
  *stored* raw outputs (``NAME/det.IMAGE.{boxes,scores,labels}``), so the comparison of decode
  does not depend on the forward pass's last bits. Compared as matched sets per image and label
  (:func:`detection_mismatch`), so near-tied scores listed in another order still agree.

The writer refuses a reference it could not trust: outputs must be finite and within half the
test's tolerance of the same model computed in float64 (:func:`conditioning`; so two float32
summation orders — another CPU or thread count, a rewritten layer — still agree within it), there
must be detections, and the detections must not change (count, label, or by more than 100× the test's
tolerance) when the raw outputs move by 1e-6 relative — a detection at a top-k boundary, a
threshold or an NMS IoU cut-off would. The weight scale (``gain``; 1.0 = unit-variance
activations, stored per detector in the metadata) is the largest of :data:`GAINS` that passes with
detections in both images (else the one with the most detections): 1.0 keeps the outputs O(1), so
the test's atol of 1e-5 is a real bound, and spreads the scores; deep stacks need less to stay finite.

Every detector is stored whole — no checksum reduction is needed: at :data:`NUM_CLASSES` classes
and these input sizes all outputs together are ~1 MB. The Hourglass-104 presets (over
:data:`SLOW_PARAMETERS` parameters, ~4 s each on one thread) are compared by the ``slow`` suite
(``make test-all``); their checkpoint layout is checked by the fast suite too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

REFERENCE = Path(__file__).parent / "data" / "detector_references.safetensors"
NUM_CLASSES = 3
BASE_SIZE = (64, 96)  # H, W: not square, so a transposed location grid would show
GAINS = (1.0, 0.85, 0.7, 0.5)  # weight scales tried, largest first (see the module docstring)
SLOW_PARAMETERS = 100_000_000  # detectors this big are compared by the slow suite only
FILE_PARAMETERS = 20_000_000  # detectors this small load their old checkpoint from a file
MAX_FLOAT64_ERROR = 0.5  # float32 outputs this close to float64 (in tolerances): two float32 orders agree
PERTURBATION = 1e-6  # relative move of the raw outputs the stored detections must survive
OUTPUT_RTOL, OUTPUT_ATOL = 1e-4, 1e-5
BOX_TOL = 1e-4  # pixels, per box coordinate
SCORE_TOL = 1e-4
# Entries not drawn by name (their stored value is kept): the input normalisation constants.
KEPT = ("pixel_mean", "pixel_std")

Layout = dict[str, tuple[str, list[int]]]  # state-dict key -> (dtype name, shape)


# --------------------------------------------------------------------------- inputs
def detectors() -> list[str]:
    """Every registered detection model."""
    from hybridvision.factory import list_models

    return list_models(task="detection")


def input_size(size_divisible: int) -> tuple[int, int]:
    """The smallest multiple of ``size_divisible`` at or above :data:`BASE_SIZE`, per side."""
    h, w = (-(-s // size_divisible) * size_divisible for s in BASE_SIZE)
    return h, w


def image_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """The full padded size, and a smaller image (padded bottom/right in the batch)."""
    h, w = size
    return [(h, w), (h * 25 // 32, w * 35 // 48)]  # (64, 96), (50, 70) at the base size


def images(size: tuple[int, int]) -> torch.Tensor:
    """``[2, 3, H, W]`` in [0, 1], each image zero outside its :func:`image_sizes`."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *size, generator=g)
    for b, (h, w) in enumerate(image_sizes(size)):
        x[b, :, h:, :] = 0
        x[b, :, :, w:] = 0
    return x


# --------------------------------------------------------------------------- weights
def named_value(key: str, shape: tuple[int, ...], gain: float) -> torch.Tensor:
    """The float32 value of the state-dict entry ``key``, from a generator seeded by its name.

    Weights of ≥ 2 dims: ``gain / sqrt(fan_in)`` standard deviation; BatchNorm statistics near
    (0, 1); norm and learnable scales near 1; biases small.
    """
    r = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
    if key.endswith("running_var"):
        return 1.0 + 0.1 * r.abs()
    if key.endswith("running_mean"):
        return 0.05 * r
    if len(shape) >= 2:
        return gain * r / max(1, torch.Size(shape[1:]).numel()) ** 0.5
    if key.endswith((".weight", ".scale")) or key == "scale":  # norm scales, learnable scales
        return 1.0 + 0.1 * r
    return 0.1 * r  # biases and other vectors


def layout_of(model: torch.nn.Module) -> Layout:
    """Name -> (dtype, shape) of every state-dict entry: what a checkpoint saved of ``model`` holds."""
    return {k: (str(v.dtype).removeprefix("torch."), list(v.shape)) for k, v in sorted(model.state_dict().items())}


def old_checkpoint(layout: Layout, kept: dict[str, torch.Tensor], gain: float) -> dict[str, torch.Tensor]:
    """The checkpoint of the stored ``layout``: floating entries drawn by name (:func:`named_value`),
    integer ones 0, the :data:`KEPT` ones from ``kept``."""
    state: dict[str, torch.Tensor] = {}
    for key, (dtype, shape) in layout.items():
        dt = getattr(torch, dtype)
        if key in kept:
            state[key] = kept[key].to(dt).reshape(shape).clone()
        elif dt.is_floating_point:
            state[key] = named_value(key, tuple(shape), gain).to(dt)
        else:
            state[key] = torch.zeros(shape, dtype=dt)
    return state


def kept_values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The :data:`KEPT` entries of a freshly built ``model``."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k.endswith(KEPT)}


# --------------------------------------------------------------------------- models
@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """Skip ``torch.nn.init``'s fills while building (~3× faster for the big presets): every value
    they would set is replaced by a loaded checkpoint. What they do not reach is built as always."""
    fills = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    with contextlib.ExitStack() as stack:
        for n in fills:
            stack.enter_context(mock.patch.object(torch.nn.init, n, lambda t, *a, **k: t))
        yield


def build(name: str, *, fast: bool = True) -> torch.nn.Module:
    """``create_model(name, num_classes=NUM_CLASSES)``; ``fast``: without the init fills."""
    from hybridvision.factory import create_model

    torch.manual_seed(0)
    with no_init() if fast else contextlib.nullcontext():
        return create_model(name, num_classes=NUM_CLASSES)


def num_parameters(layout: Layout) -> int:
    return sum(torch.Size(shape).numel() for _, shape in layout.values())


def flat_outputs(outputs: dict) -> dict[str, torch.Tensor]:
    """``out.KEY.I`` for each tensor of a list output, ``out.KEY`` for a tensor; float32 NCHW."""
    flat: dict[str, torch.Tensor] = {}
    for key, val in outputs.items():
        if isinstance(val, (list, tuple)):
            for i, t in enumerate(val):
                flat[f"out.{key}.{i}"] = t.detach().float().contiguous()
        else:
            flat[f"out.{key}"] = val.detach().float().contiguous()
    return flat


def nest_outputs(flat: dict[str, torch.Tensor]) -> dict:
    """The inverse of :func:`flat_outputs`: the output dict ``decode`` takes."""
    lists: dict[str, dict[int, torch.Tensor]] = {}
    out: dict = {}
    for name, t in flat.items():
        parts = name.split(".")
        if len(parts) == 3:
            lists.setdefault(parts[1], {})[int(parts[2])] = t
        else:
            out[parts[1]] = t
    for key, items in lists.items():
        out[key] = [items[i] for i in range(len(items))]
    return out


@torch.no_grad()
def forward(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Flat raw outputs of ``model`` (eval mode) for :func:`images`."""
    model.eval()
    size = input_size(model.size_divisible)
    return flat_outputs(model(images(size), image_sizes(size)))


@torch.no_grad()
def decode(model: torch.nn.Module, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``det.IMAGE.{boxes,scores,labels}``: ``model.decode`` (default options) of flat raw outputs."""
    sizes = image_sizes(input_size(model.size_divisible))
    dets = model.decode(nest_outputs(flat), sizes)
    return {f"det.{i}.{k}": v.detach().contiguous() for i, det in enumerate(dets) for k, v in det.items()}


# --------------------------------------------------------------------------- comparisons
def output_mismatch(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> str | None:
    """Where flat raw outputs differ beyond rtol 1e-4, atol 1e-5 (None when they agree)."""
    if set(got) != set(want):
        return f"output tensors {sorted(set(got) ^ set(want))} are in only one of new / reference"
    for key, ref in want.items():
        try:
            torch.testing.assert_close(got[key], ref, rtol=OUTPUT_RTOL, atol=OUTPUT_ATOL)
        except AssertionError as e:
            return f"{key}: {' '.join(str(e).split())[:300]}"
    return None


def detection_mismatch(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor],
                       scale: float = 1.0) -> str | None:
    """Where flat detections ``got`` differ from ``want`` (None when they agree).

    Per image and label, the detections are matched one to one (``linear_sum_assignment`` on the
    larger of the box-corner and score differences, in tolerances), so near-tied scores listed in
    another order still agree; the counts per image and label must be equal, and every matched
    pair lie within ``scale`` × (:data:`BOX_TOL`, :data:`SCORE_TOL`).
    """
    from scipy.optimize import linear_sum_assignment

    if set(got) != set(want):
        return f"detection tensors {sorted(set(got) ^ set(want))} are in only one of new / reference"
    for i in sorted({k.split(".")[1] for k in want}):
        g_lab, w_lab = got[f"det.{i}.labels"], want[f"det.{i}.labels"]
        if g_lab.dtype != w_lab.dtype:
            return f"image {i}: labels are {g_lab.dtype}, reference {w_lab.dtype}"
        for c in sorted(set(w_lab.tolist()) | set(g_lab.tolist())):
            g, w = g_lab == c, w_lab == c
            if int(g.sum()) != int(w.sum()):
                return f"image {i} label {c}: {int(g.sum())} detections, reference {int(w.sum())}"
            gb, wb = got[f"det.{i}.boxes"][g].double(), want[f"det.{i}.boxes"][w].double()  # [n, 4]
            gs, ws = got[f"det.{i}.scores"][g].double(), want[f"det.{i}.scores"][w].double()  # [n]
            cost = torch.maximum((gb[:, None] - wb[None]).abs().amax(-1) / BOX_TOL,
                                 (gs[:, None] - ws[None]).abs() / SCORE_TOL)  # [n, n] in tolerances
            rows, cols = linear_sum_assignment(cost.numpy())
            worst = float(cost[rows, cols].max()) if len(rows) else 0.0
            if not worst <= scale:
                return (f"image {i} label {c}: a detection differs by {worst:.3g}× the tolerance "
                        f"(box {BOX_TOL:g} px, score {SCORE_TOL:g})")
    return None


# --------------------------------------------------------------------------- the stored file
def load_reference(path: Path = REFERENCE) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """The stored tensors and, per detector, its metadata (``gain``, ``size``, ``parameters``...)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["detectors"])
    return load_file(str(path)), meta


def stored(tensors: dict[str, torch.Tensor], name: str, kind: str) -> dict[str, torch.Tensor]:
    """The stored tensors of detector ``name`` whose key (after ``name/``) starts with ``kind.``:
    ``out`` and ``det`` keep that first part (``out.KEY.I``), ``kept`` drops it (a state-dict key)."""
    prefix = f"{name}/{kind}."
    cut = len(prefix) if kind == "kept" else len(name) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix)}


def stored_layout(tensors: dict[str, torch.Tensor], name: str) -> Layout:
    raw = json.loads(zlib.decompress(tensors[f"{name}/layout"].numpy().tobytes()))
    return {k: (d, s) for k, (d, s) in raw.items()}


def _pack_layout(layout: Layout) -> torch.Tensor:
    return torch.frombuffer(bytearray(zlib.compress(json.dumps(layout).encode(), 9)), dtype=torch.uint8)


# --------------------------------------------------------------------------- writing
def _stable(model: torch.nn.Module, flat: dict[str, torch.Tensor], dets: dict[str, torch.Tensor]) -> str | None:
    """None when the detections survive :data:`PERTURBATION` moves of the raw outputs (5 draws)."""
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        moved = {k: v * (1 + PERTURBATION * (2 * torch.rand(v.shape, generator=g) - 1)) for k, v in flat.items()}
        problem = detection_mismatch(decode(model, moved), dets, scale=100.0)
        if problem:
            return f"not stable under a {PERTURBATION:g} move of the outputs: {problem}"
    return None


@torch.no_grad()
def conditioning(model: torch.nn.Module, flat: dict[str, torch.Tensor]) -> float:
    """The largest difference between the float32 outputs ``flat`` and the same model's float64
    outputs, in units of the test's tolerance (atol + rtol·|reference|)."""
    model.double()
    try:
        size = input_size(model.size_divisible)
        exact = flat_outputs(model(images(size).double(), image_sizes(size)))
    finally:
        model.float()  # exact: the weights were float32 values
    return max(float(((exact[k].double() - v.double()).abs() / (OUTPUT_ATOL + OUTPUT_RTOL * v.double().abs())).max())
               for k, v in flat.items())


def _candidate(model: torch.nn.Module, layout: Layout, kept: dict[str, torch.Tensor], gain: float
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[int], float] | str:
    """Flat outputs, detections and detections per image of ``model`` at weight scale ``gain``, or
    why they cannot be a reference."""
    model.load_state_dict(old_checkpoint(layout, kept, gain), strict=True)
    flat = forward(model)
    if not all(bool(torch.isfinite(v).all()) for v in flat.values()):
        return "outputs not finite"
    error = conditioning(model, flat)
    if error > MAX_FLOAT64_ERROR:
        return f"float32 outputs {error:.3g}× the test's tolerance away from float64 ones"
    dets = decode(model, flat)
    counts = [len(v) for k, v in sorted(dets.items()) if k.endswith("scores")]
    if sum(counts) == 0:
        return "no detections"
    fresh = decode(model, forward(model))  # from the model's own (possibly NHWC) outputs: the same
    return detection_mismatch(fresh, dets, scale=0.0) or _stable(model, flat, dets) or (flat, dets, counts, error)


@torch.no_grad()
def make(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The stored tensors (prefixed ``name/``) and metadata of one detector.

    The gain is the largest of :data:`GAINS` whose reference is trustworthy (:func:`_candidate`)
    with detections in both images; when none has, the one with the most detections."""
    model = build(name, fast=False).eval()  # as users build it; the test builds without the init fills
    layout, kept = layout_of(model), kept_values(model)
    problems, usable = [], []
    for gain in GAINS:
        got = _candidate(model, layout, kept, gain)
        if isinstance(got, str):
            problems.append(f"gain {gain}: {got}")
            continue
        usable.append((gain, *got))
        if min(got[2]) > 0:
            break
    if not usable:
        raise RuntimeError(f"{name}: no trustworthy reference ({'; '.join(problems)})")
    both = [u for u in usable if min(u[3]) > 0]  # at most one: the loop stops at it
    gain, flat, dets, counts, error = both[0] if both else max(usable, key=lambda u: sum(u[3]))  # first of a tie
    tensors = {f"{name}/{k}": v for k, v in {**flat, **dets}.items()}
    tensors.update({f"{name}/kept.{k}": v for k, v in kept.items()})
    tensors[f"{name}/layout"] = _pack_layout(layout)
    meta = {"gain": gain, "size": list(input_size(model.size_divisible)), "detections": counts,
            "parameters": num_parameters(layout), "class": type(model).__name__,
            "max_abs_output": round(max(float(v.abs().max()) for v in flat.values()), 3),
            "float64_error": round(error, 3)}
    return tensors, meta


def write(path: Path, names: list[str]) -> None:
    from hybridvision.fileio import atomic_save_tensors

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict] = {}
    for name in names:
        t0 = time.perf_counter()
        t, m = make(name)
        tensors.update(t)
        meta[name] = m
        print(f"{name}: {m} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(path, tensors, {"torch": torch.__version__, "detectors": json.dumps(meta, sort_keys=True)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stored references of every registered detector.")
    parser.add_argument("--write", action="store_true", help=f"write {REFERENCE.name} for every detector")
    parser.add_argument("--force", action="store_true", help="replace an existing reference")
    parser.add_argument("names", nargs="*", help="without --write: detectors to make and describe, writing nothing")
    args = parser.parse_args(argv)
    if args.write:
        if args.names:
            parser.error("--write makes the reference of every detector; give no names")
        if REFERENCE.exists() and not args.force:
            parser.error(f"{REFERENCE} exists: it is the reference made before the refactor; "
                         "pass --force to replace it")
        torch.set_num_threads(1)  # one order of the float sums, as the test runs
        write(REFERENCE, detectors())
        print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
        return
    for name in args.names or detectors():
        t0 = time.perf_counter()
        _, m = make(name)
        print(f"{name}: {m} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
