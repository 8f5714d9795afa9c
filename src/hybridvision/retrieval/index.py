"""A gallery index for retrieval: every gallery image embedded once, cached, searched by cosine.

The cache is one safetensors file (``embeddings`` ``[N, E]``, the file list in its metadata)
named by a fingerprint of everything the embeddings depend on — the weights' bytes (SHA-256), the
input size, and each gallery file's relative path, size and modification time — so any change of
the gallery or the model makes a new index, and an unchanged gallery is read back instead of
embedded again. The cache lives in a folder of its own (``--cache``; default
``~/.cache/hybridvision/gallery``), never in the gallery.

A cache file is checked before it is used — one 2-D float ``embeddings`` tensor with a row per
gallery image (in the listing's order), the width the model embeds to, finite unit rows — and a
file that fails (damaged, tampered, written by another version) is rebuilt, never trusted.

The gallery is listed as training lists class folders: symbolic links to folders and files are
followed (each real folder once, so a link to an ancestor does not loop); names starting with
``.`` are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from hybridvision.errors import DataError, UserInputError
from hybridvision.fileio import atomic_save_tensors
from hybridvision.imageio import IMAGE_EXTENSIONS

__all__ = ["gallery_files", "index_fingerprint", "GalleryIndex", "default_cache_dir"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hybridvision" / "gallery"


def _walk_images(root: Path) -> Iterator[Path]:
    """Every image file under ``root`` (not hidden), following links to folders as training does
    (:func:`~hybridvision.data.sketch_readers.find_image_folder`), each real folder visited once."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a folder already listed (or an ancestor): no loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath, name)
            if not name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                yield p


def gallery_files(gallery: str | os.PathLike) -> list[Path]:
    """The images under ``gallery`` (any depth; class folders or flat; linked folders followed),
    sorted by relative path."""
    root = Path(gallery)
    if not root.is_dir():
        raise UserInputError(f"--gallery {root}: not a folder; pass a folder of images (class folders or flat)")
    files = sorted(_walk_images(root), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise UserInputError(f"--gallery {root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    return files


def index_fingerprint(weights: str | os.PathLike, gallery: str | os.PathLike, files: Sequence[Path],
                      image_size: int) -> str:
    """SHA-256 hex of the weights' bytes, the input size and every file's (path, size, mtime)."""
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(f"size={image_size}".encode())
    root = Path(gallery)
    for p in files:
        st = p.stat()
        h.update(f"\0{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def valid_embeddings(emb: object, rows: int, width: int | None = None) -> bool:
    """True when ``emb`` can be an index of ``rows`` images: a 2-D float tensor ``[rows, E]``
    (``E == width`` when given) of finite, unit-length (or zero) rows, as cosine search needs."""
    if not (isinstance(emb, torch.Tensor) and emb.dtype.is_floating_point and emb.dim() == 2):
        return False
    if emb.shape[0] != rows or emb.shape[1] < 1 or (width is not None and emb.shape[1] != width):
        return False
    if not bool(torch.isfinite(emb).all()):
        return False
    norms = emb.float().norm(dim=1)  # [rows]; 0 where an image's features were all zero
    return bool((((norms - 1).abs() < 1e-3) | (norms == 0)).all())


class GalleryIndex:
    """Unit embeddings ``[N, E]`` of a gallery's images, with their relative paths."""

    def __init__(self, embeddings: torch.Tensor, files: list[str], fingerprint: str, cached: bool) -> None:
        self.embeddings, self.files, self.fingerprint, self.cached = embeddings, files, fingerprint, cached

    @classmethod
    def build(cls, gallery: str | os.PathLike, weights: str | os.PathLike, image_size: int,
              embed: Callable[[list[Path]], torch.Tensor], cache_dir: str | os.PathLike | None = None,
              batch_size: int = 32, width: int | None = None) -> GalleryIndex:
        """Read the cached index of this (weights, gallery) or embed the gallery with ``embed``
        (a list of image paths → unit embeddings ``[B, E]``) and cache it. ``width``: the
        embedding width the model gives (the query's), checked against a cached index; a cache
        file that fails :func:`valid_embeddings` is rebuilt."""
        root = Path(gallery)
        files = gallery_files(root)
        fp = index_fingerprint(weights, root, files, image_size)
        rel = [p.relative_to(root).as_posix() for p in files]
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = cache / f"index-{fp[:32]}.safetensors"
        if path.is_file():
            try:
                with safe_open(str(path), framework="pt") as f:  # metadata: the files it was built from
                    meta = f.metadata() or {}
                    if meta.get("fingerprint") == fp and json.loads(meta.get("files", "[]")) == rel:
                        emb = f.get_tensor("embeddings")
                        if valid_embeddings(emb, len(rel), width):
                            return cls(emb.float(), rel, fp, cached=True)
            except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
                pass  # a damaged cache file is rebuilt below
        chunks = [embed(files[i:i + batch_size]) for i in range(0, len(files), batch_size)]
        emb = torch.cat(chunks).float().contiguous()  # [N, E]
        if emb.shape[0] != len(files):
            raise DataError(f"{root}: the model embedded {emb.shape[0]} of {len(files)} images")
        if not bool(torch.isfinite(emb).all()):
            raise DataError(f"{weights}: the model's gallery embeddings are not finite numbers (NaN/inf): "
                            "its weights are damaged or diverged; retrain or pass other --weights")
        try:
            cache.mkdir(parents=True, exist_ok=True)
            atomic_save_tensors(path, {"embeddings": emb}, {"fingerprint": fp, "files": json.dumps(rel)})
        except OSError as e:
            raise UserInputError(f"--cache {cache}: cannot write the gallery index ({e.strerror}); pass "
                                 "a writable --cache folder") from None
        return cls(emb, rel, fp, cached=False)

    def search(self, queries: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """``[Q, E]`` unit query embeddings → ``(scores [Q, k], indices [Q, k])``, best first
        (ties by gallery order, as :func:`~hybridvision.evaluation.retrieval.rank_gallery`)."""
        sim = queries.float() @ self.embeddings.T  # [Q, N] cosine
        order = torch.sort(-sim, dim=1, stable=True).indices[:, :k]
        return sim.gather(1, order), order
