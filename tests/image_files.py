"""Image files for tests that the tests write themselves."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def bomb_png(path: Path, w: int = 30000, h: int = 30000) -> Path:
    """A 60-byte PNG whose header declares a w×h canvas (900 Mpx by default): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path
