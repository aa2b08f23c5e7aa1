"""Reads `.safetensors` files with NumPy alone (no torch, no pickle, no extra dependency).

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header size N,
N bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{...}}`, then the tensors' bytes, little-endian and C-contiguous, at offsets from the end of
the header. Every offset and size is checked against the file before a byte is read.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

__all__ = ["read_safetensors"]

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 below
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 2**20


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Returns `{name: array}` of a `.safetensors` file (bfloat16 tensors as float32).

    Raises:
      ValueError: if the file is not a well-formed safetensors file, naming what is wrong.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file ({len(data)} bytes)")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > min(_MAX_HEADER, len(data) - 8):
        raise ValueError(f"{path}: not a safetensors file (header of {header_size} bytes)")
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    body = memoryview(data)[8 + header_size :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(n) for n in entry["shape"])
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: tensor {name!r} has a bad header entry {entry!r}") from e
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(body):
            raise ValueError(f"{path}: tensor {name!r} lies outside the file ({entry!r})")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(
                f"{path}: tensor {name!r} of shape {shape} {entry['dtype']} has {end - begin} bytes"
            )
        value = np.frombuffer(body[begin:end], dtype).reshape(shape)
        if entry["dtype"] == "BF16":
            value = (value.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = value.astype(value.dtype.newbyteorder("="))
    return tensors
