"""Encoded image files for the bad-input tests: real JPEGs, and PNG headers that lie."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_header(width: int, height: int) -> bytes:
    """Returns PNG bytes whose header claims width x height RGB pixels, with almost no data."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg(array: np.ndarray) -> bytes:
    """Returns the JPEG bytes (quality 90) of a uint8 [H, W, 3] array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
