"""Helpers of the converter tests: realistic BatchNorm statistics, errors, safetensors files.

torch and torchvision are test requirements (the `test` extra): imported directly, so that a
missing torch fails the tests rather than skipping them.
"""

import json

import numpy as np
import pytest
import torch


def relative_error(got, want):
    """Returns max |got - want| / max |want|, after checking the shapes agree."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max()
    assert scale > 1e-3, "degenerate reference"
    return float(np.abs(got - want).max() / scale)


def settle_batch_norm(net, images):
    """Gives every BatchNorm of `net` random affine parameters and one batch's statistics.

    So that all four BatchNorm tensors matter (fresh ones are the identity), then puts
    `net` in eval mode.
    """
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                channels = module.num_features
                module.weight.copy_(0.2 + 0.4 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.2 * torch.randn(channels, generator=generator))
            module.momentum = None  # cumulative average: one batch sets the statistics
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()
    return net


_SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64"}


def write_safetensors(path, tensors, *, dtype_names=None):
    """Writes `{name: ndarray}` as a `.safetensors` file (the format's spec, little-endian)."""
    header, chunks, offset = {}, [], 0
    for name, value in tensors.items():
        value = np.require(value, requirements="C")  # (ascontiguousarray makes 0-d 1-d)
        data = value.astype(value.dtype.newbyteorder("<")).tobytes()
        dtype = (dtype_names or {}).get(name) or _SAFETENSORS_DTYPES[value.dtype.name]
        header[name] = {
            "dtype": dtype,
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded + b"".join(chunks))


@pytest.fixture(name="write_safetensors")
def write_safetensors_fixture():
    """Returns `write_safetensors(path, tensors, *, dtype_names=None)`."""
    return write_safetensors


@pytest.fixture(name="relative_error")
def relative_error_fixture():
    """Returns `relative_error(got, want)`: max |got - want| / max |want|."""
    return relative_error


@pytest.fixture(name="settle_batch_norm", scope="session")
def settle_batch_norm_fixture():
    """Returns `settle_batch_norm(net, images) -> net`."""
    return settle_batch_norm
