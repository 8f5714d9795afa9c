"""The one image reader: every place that opens an image file (datasets, ``data check``,
``predict``, ``explain``, sketch folders, converters) goes through here.

- :data:`IMAGE_EXTENSIONS` — the file types a folder of images is scanned for.
- :func:`read_image_size` — ``(width, height)`` from the header only, after the safety checks.
- :func:`load_image_uint8` / :func:`load_image` — RGB ``[3, H, W]`` as uint8 / float in [0, 1].
- :func:`load_gray_uint8` — a grey ``[H, W]`` uint8 sketch, transparency composited on white.

Before any pixel is decoded the header is read (PIL, lazily) and an image of more than
:func:`max_pixels` pixels (PIL's ``Image.MAX_IMAGE_PIXELS``, about 89.5 Mpx) is refused: a
"decompression bomb" — a small file declaring a huge canvas — would otherwise take all memory.
PNG, JPEG and WebP are decoded by ``torchvision.io.decode_image`` (libpng/libjpeg-turbo/libwebp,
16-bit PNGs scaled to 8 bits); other types (BMP, GIF, TIFF) by PIL. Every failure — missing file,
not an image, truncated data, too large — is one :class:`~hybridvision.errors.DataError` line
naming the file and the fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hybridvision.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "load_gray_uint8", "load_image", "load_image_uint8",
           "max_pixels", "read_image_size", "verify_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_TORCHVISION_FORMATS = {"PNG", "JPEG", "MPO", "WEBP"}  # PIL's names of what decode_image reads


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file whose extension (any case) is in :data:`IMAGE_EXTENSIONS`."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def max_pixels() -> int:
    """The largest image (width × height) that is decoded: PIL's ``Image.MAX_IMAGE_PIXELS``
    (read at call time, so a program may raise it), or about 89.5 Mpx if that is unset."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else 89_478_485


def _header(path: Path) -> tuple[str, int, int]:
    """``(format, width, height)`` from the header, refusing missing, undecodable or huge images."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, (w, h) = str(im.format or ""), im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; put it there or fix the path / file_name") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image file") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: unreadable image: its header declares more than {2 * max_pixels()} "
                        f"pixels, over the {max_pixels()}-pixel limit (a decompression bomb, or far "
                        "larger than any model input); resize it or remove it") from None
    except Exception as e:  # PIL raises many types for files that are not images
        raise DataError(f"{path}: unreadable image ({e.__class__.__name__}: {e}); replace or "
                        "remove the file") from None
    if w * h > max_pixels():
        raise DataError(f"{path}: unreadable image: {w}x{h} = {w * h} pixels, over the {max_pixels()}-pixel "
                        "limit (a decompression bomb, or far larger than any model input); resize "
                        "it or remove it")
    return fmt, w, h


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (no pixels decoded), after the checks
    of :func:`load_image_uint8` that need no decoding (exists, is an image, not too large)."""
    _, w, h = _header(Path(path))
    return w, h


def load_image_uint8(path: str | os.PathLike) -> Tensor:
    """Read an image file as uint8 ``[3, H, W]`` RGB; one-line :class:`DataError` if it fails."""
    p = Path(path)
    fmt, w, h = _header(p)
    try:
        if fmt in _TORCHVISION_FORMATS:
            from torchvision.io import ImageReadMode, decode_image
            from torchvision.transforms.v2.functional import to_dtype

            data = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
            img = decode_image(data, mode=ImageReadMode.RGB)
            if img.dtype != torch.uint8:  # 16-bit PNG
                img = to_dtype(img, torch.uint8, scale=True)
        else:
            from PIL import Image

            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
            img = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    except Exception as e:  # decoders raise RuntimeError / OSError / ValueError for bad data
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{p}: unreadable image ({e.__class__.__name__}: {first}); replace or "
                        "remove the file") from None
    if img.ndim == 4:  # an animated image: its first frame
        img = img[0]
    if tuple(img.shape[-2:]) != (h, w):
        raise DataError(f"{p}: decoded size {img.shape[-1]}x{img.shape[-2]} differs from the header's "
                        f"{w}x{h}; re-save the image")
    return img


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as float32 ``[3, H, W]`` RGB in [0, 1]; one-line :class:`DataError`."""
    return load_image_uint8(path).float().div_(255.0)


def verify_image(path: str | os.PathLike) -> None:
    """Check an image file's structure without decoding pixels (PIL's ``verify``: header, PNG
    chunk CRCs); one-line :class:`DataError` if it is broken."""
    from PIL import Image

    p = Path(path)
    _header(p)
    try:
        with Image.open(p) as im:
            im.verify()
    except Exception as e:  # PIL raises many types (SyntaxError, OSError, ...)
        raise DataError(f"{p}: unreadable image ({e.__class__.__name__}: {e}); replace or "
                        "remove the file") from None


def load_gray_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a uint8 ``[H, W]`` grey sketch; transparency becomes white paper
    (sketch PNGs often draw ink on a transparent background)."""
    from PIL import Image

    p = Path(path)
    _header(p)
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            return np.array(im.convert("L"), dtype=np.uint8)
    except Exception as e:  # truncated or corrupt pixel data
        raise DataError(f"{p}: unreadable image ({e.__class__.__name__}: {e}); re-export it as "
                        "PNG or remove it from the dataset") from None
