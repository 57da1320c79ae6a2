"""PURE: 8-bit RGB PNG files from pixels, so shd can draw a small picture without an imaging library."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode(width: int, height: int, rows: list[bytes]) -> bytes:
    """A PNG of `height` rows of `width` RGB pixels (each row 3 x width bytes, top first)."""
    if len(rows) != height or any(len(r) != 3 * width for r in rows):
        raise ValueError(f"need {height} rows of {3 * width} bytes")
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 (none) on every row
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, or None if `data` does not start like a PNG."""
    if len(data) < 24 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height
