"""Reads torchvision state dicts from `.pth` / `.pt` (torch, weights only) or `.safetensors`.

`.pth` files are pickles; they are read with `torch.load(..., weights_only=True)`, torch's
restricted unpickler that builds tensors and plain containers and refuses anything else, so a
file cannot run code. `.safetensors` files hold no code at all and need no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxseg.convert.safetensors_file import read_safetensors

__all__ = ["INSTALL_HINT", "import_torch", "read_state_dict", "to_numpy"]

INSTALL_HINT = "pip install 'jaxseg[torch]'"


def import_torch() -> Any:
    """Returns the `torch` module; ImportError saying how to install it when it is missing."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading .pth files needs PyTorch, an optional extra of jaxseg: {INSTALL_HINT} "
            "(or convert the weights to .safetensors, which needs no torch)"
        ) from e
    return torch


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Returns `{key: ndarray}` from torch tensors or arrays; drops a DataParallel `module.`."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            "expected a state dict (a mapping of names to tensors), got "
            f"{type(state_dict).__name__}"
        )
    tensors = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no NumPy dtype
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":
                value = value.float()
            value = value.numpy()
        tensors[str(key)] = np.asarray(value)
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module.") :]: value for key, value in tensors.items()}
    return tensors


def _unwrap(loaded: Any, path: str) -> Mapping[str, Any]:
    """Returns the state dict inside what `torch.load` gave (a dict, or one under 'model')."""
    if isinstance(loaded, Mapping):
        for wrapper in ("model", "state_dict"):  # torchvision's training references save these
            if isinstance(loaded.get(wrapper), Mapping):
                return loaded[wrapper]
        if all(hasattr(v, "shape") for v in loaded.values()):
            return loaded
    raise ValueError(
        f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors; save one with "
        "torch.save(model.state_dict(), path)"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Returns `{key: ndarray}` read from a `.pth`/`.pt`/`.bin` or `.safetensors` file.

    Raises:
      FileNotFoundError: no such file.
      ImportError: a `.pth` file without torch installed (says how to install it).
      ValueError: a pickle that holds anything but tensors and containers (refused by
        torch's weights-only unpickler), or a file that is not a state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.endswith(".safetensors"):
        return to_numpy(read_safetensors(path))
    torch = import_torch()
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... by version
        raise ValueError(
            f"{path}: refused: not a weights-only torch file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). jaxseg never unpickles arbitrary "
            "objects; save the weights with torch.save(model.state_dict(), path), or as "
            ".safetensors"
        ) from e
    return to_numpy(_unwrap(loaded, path))
