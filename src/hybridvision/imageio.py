"""The one image reader: every place that opens an image file (datasets, ``data check``,
``predict``, ``explain``, ``retrieve``, sketch folders, converters) goes through here.

- :data:`IMAGE_EXTENSIONS` — the file types a folder of images is scanned for.
- :func:`read_image_size` — upright ``(width, height)`` from the header only, after the safety checks.
- :func:`load_image_uint8` / :func:`load_image` — upright RGB ``[3, H, W]`` as uint8 / float in [0, 1].
- :func:`load_gray_uint8` — an upright grey ``[H, W]`` uint8 sketch, transparency composited on white.

Before any pixel is decoded the header is read (PIL, lazily) and an image of more than
:func:`max_pixels` pixels (PIL's ``Image.MAX_IMAGE_PIXELS``, about 89.5 Mpx) is refused: a
"decompression bomb" — a small file declaring a huge canvas — would otherwise take all memory.
Every format is decoded by PIL, whose decoders report broken data as Python exceptions (a PNG
with corrupt IDAT data crashed torchvision's native libpng decoder with SIGSEGV); 16-bit images
are scaled to 8 bits. Every failure — missing file, not an image, truncated data, too large — is
one :class:`~hybridvision.errors.DataError` line naming the file and the fix.

EXIF orientation: a photo stored sideways with an EXIF ``Orientation`` tag (phones do this) is
returned upright, as every image viewer shows it (PIL's ``ImageOps.exif_transpose`` convention,
as in ultralytics and detectron2): sizes, pixels — and therefore annotation boxes — are in the
upright frame. The tag is read from the header (JPEG/WebP/TIFF; a PNG's ``eXIf`` chunk when it
precedes the pixel data), so :func:`read_image_size` and the loaders always agree.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hybridvision.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "load_gray_uint8", "load_image", "load_image_uint8",
           "max_pixels", "read_image_size", "verify_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_ORIENTATION_TAG = 0x0112  # EXIF "Orientation": 1 upright; 2-8 a flip and/or a rotation by 90° steps


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file whose extension (any case) is in :data:`IMAGE_EXTENSIONS`."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def max_pixels() -> int:
    """The largest image (width × height) that is decoded: PIL's ``Image.MAX_IMAGE_PIXELS``
    (read at call time, so a program may raise it), or about 89.5 Mpx if that is unset."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else 89_478_485


def _unreadable(p: Path, e: BaseException, fix: str = "replace or remove the file") -> DataError:
    """One-line error for a decoder's exception (first line of its message, at most 200 chars)."""
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return DataError(f"{p}: unreadable image ({e.__class__.__name__}: {first}); {fix}")


def _orientation(im) -> int:
    """The EXIF orientation (1-8) in ``im``'s header; 1 when absent or not a valid value."""
    if im.format == "PNG" and "exif" not in im.info:  # PIL would decode the pixels to look further
        return 1
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block: the pixels are still fine, take them as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


@contextmanager
def _opened(path: Path) -> Iterator[tuple[object, int, int, int]]:
    """Open ``path`` lazily and check its header: yields ``(PIL image, stored width, stored height,
    EXIF orientation)``, refusing missing, undecodable or huge images with one line."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        w, h = im.size
        orientation = _orientation(im)
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
    with im:
        if w * h > max_pixels():
            raise DataError(f"{path}: unreadable image: {w}x{h} = {w * h} pixels, over the {max_pixels()}-pixel "
                            "limit (a decompression bomb, or far larger than any model input); resize "
                            "it or remove it")
        yield im, w, h, orientation


def _upright_size(w: int, h: int, orientation: int) -> tuple[int, int]:
    """``(width, height)`` after the EXIF orientation: 5-8 turn the image by 90°."""
    return (h, w) if orientation >= 5 else (w, h)


def _decoded_upright(p: Path, im, orientation: int):
    """Decode ``im`` (the first frame of an animation) and turn it upright; a PIL image."""
    from PIL import Image

    transpose = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}
    im.load()
    return im.transpose(transpose[orientation]) if orientation in transpose else im


def _to_rgb_array(im) -> np.ndarray:
    """A decoded PIL image → uint8 ``[H, W, 3]``; 16-bit (and 32-bit integer) grey scaled to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = (np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)  # [H, W]
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))  # a writable copy (torch.from_numpy needs one)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Upright ``(width, height)`` of an image file from its header (no pixels decoded), after the
    checks of :func:`load_image_uint8` that need no decoding (exists, is an image, not too large);
    an EXIF orientation of 5-8 swaps the stored sides."""
    with _opened(Path(path)) as (_, w, h, orientation):
        return _upright_size(w, h, orientation)


def load_image_uint8(path: str | os.PathLike) -> Tensor:
    """Read an image file as upright uint8 ``[3, H, W]`` RGB; one-line :class:`DataError` if it fails."""
    p = Path(path)
    with _opened(p) as (im, w, h, orientation):
        try:
            arr = _to_rgb_array(_decoded_upright(p, im, orientation))  # [H, W, 3] uint8
        except Exception as e:  # decoders raise OSError / ValueError / SyntaxError for bad data
            raise _unreadable(p, e) from None
    img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # [3, H, W]
    if tuple(img.shape[-2:]) != _upright_size(w, h, orientation)[::-1]:
        raise DataError(f"{p}: decoded size {img.shape[-1]}x{img.shape[-2]} differs from the header's "
                        f"{w}x{h}; re-save the image")
    return img


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as upright float32 ``[3, H, W]`` RGB in [0, 1]; one-line :class:`DataError`."""
    return load_image_uint8(path).float().div_(255.0)


def verify_image(path: str | os.PathLike) -> None:
    """Check an image file's structure without decoding pixels (PIL's ``verify``: header, PNG
    chunk CRCs); one-line :class:`DataError` if it is broken."""
    p = Path(path)
    with _opened(p) as (im, _, _, _):
        try:
            im.verify()
        except Exception as e:  # PIL raises many types (SyntaxError, OSError, ...)
            raise DataError(f"{p}: unreadable image ({e.__class__.__name__}: {e}); replace or "
                            "remove the file") from None


def load_gray_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an upright uint8 ``[H, W]`` grey sketch; transparency becomes white
    paper (sketch PNGs often draw ink on a transparent background)."""
    from PIL import Image

    p = Path(path)
    with _opened(p) as (im, _, _, orientation):
        try:
            im = _decoded_upright(p, im, orientation)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            if im.mode.startswith("I"):  # 16-bit grey
                return _to_rgb_array(im)[..., 0].copy()
            return np.array(im.convert("L"), dtype=np.uint8)
        except Exception as e:  # truncated or corrupt pixel data
            raise _unreadable(p, e, "re-export it as PNG or remove it from the dataset") from None
