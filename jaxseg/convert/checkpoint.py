"""Converted weights on disk: an orbax checkpoint that `train.py` and `eval.py` read.

Layout of an output folder `DIR`::

    DIR/checkpoints/0/state/      orbax PyTree {'step': 0, 'params': ...,
                                                'model_state': {'batch_stats': ...}}
    DIR/jaxseg_convert.json       {'arch', 'model', 'settings', 'prefix', 'source', 'dropped',
                                   'reinitialised', 'preprocessing'}

`checkpoints/` is an `orbax.checkpoint.CheckpointManager` folder with one step, 0, whose item
`state` holds the variables under the names of the trainer's `TrainState` (`step`, `params`,
and `model_state` for the other collections; no optimiser state); so `config.init_from=DIR`
reads it as it reads a training run's workdir. With a `prefix` (e.g. 'backbone') the
variables are nested under that module path, which is where `FCNResNet` and `MaskRCNN`
keep their ResNet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.convert.archs import get_arch
from jaxseg.convert.converter import Conversion
from jaxseg.convert.preprocessing import preprocessing

__all__ = ["METADATA_FILE", "load_converted", "save_converted"]

METADATA_FILE = "jaxseg_convert.json"
_STEP = 0


def _nest(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    for name in reversed([p for p in prefix.split("/") if p]):
        tree = {name: tree}
    return tree


def _json_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the module attributes as JSON values (dtypes by name, tuples as lists)."""
    out = {}
    for key, value in settings.items():
        if key == "dtype":
            value = jnp.dtype(value).name
        elif isinstance(value, Mapping):  # a group of a part's settings (Mask R-CNN's rpn)
            value = _json_settings(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def save_converted(
    directory: str | os.PathLike, conversion: Conversion, *, source: str = "", prefix: str = ""
) -> str:
    """Writes `conversion` into `directory` (layout above); returns the checkpoint folder.

    Args:
      directory: the output folder (created; must not already hold a converted checkpoint).
      conversion: from `jaxseg.convert.convert_state_dict`.
      source: where the weights came from, recorded in the JSON.
      prefix: module path to nest the variables under (e.g. 'backbone'), '' for none.

    Raises:
      ValueError: if `directory` already holds a checkpoint.
    """
    directory = os.path.abspath(os.fspath(directory))
    checkpoints = os.path.join(directory, "checkpoints")
    if os.path.exists(os.path.join(checkpoints, str(_STEP))) or os.path.exists(
        os.path.join(directory, METADATA_FILE)
    ):
        raise ValueError(f"{directory} already holds a checkpoint; choose an empty folder")
    variables = jax.device_get(conversion.variables)
    state = {
        "step": np.zeros((), np.int32),
        "params": _nest(variables["params"], prefix),
        "model_state": {k: _nest(v, prefix) for k, v in variables.items() if k != "params"},
    }
    manager = ocp.CheckpointManager(
        checkpoints, item_names=("state",), options=ocp.CheckpointManagerOptions(create=True)
    )
    try:
        manager.save(_STEP, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()
    finally:
        manager.close()
    metadata = {
        "arch": conversion.arch,
        "model": get_arch(conversion.arch).model_name,
        "settings": _json_settings(conversion.settings),
        "prefix": prefix,
        "source": source,
        "dropped": conversion.dropped,
        "reinitialised": list(conversion.reinitialised),
        "preprocessing": preprocessing(conversion.arch),
    }
    with open(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    return checkpoints


def load_converted(directory: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Returns `(model, variables)` written by `save_converted` (a prefix taken off again).

    Raises:
      ValueError: if `directory` holds no converted checkpoint.
    """
    directory = os.path.abspath(os.fspath(directory))
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{directory}: no {METADATA_FILE}; not written by jaxseg.convert")
    with open(path) as f:
        metadata = json.load(f)
    settings = {
        k: tuple(v) if isinstance(v, list) else jnp.dtype(v) if k == "dtype" else v
        for k, v in metadata["settings"].items()
    }
    model = get_arch(metadata["arch"]).build(**settings)
    manager = ocp.CheckpointManager(
        os.path.join(directory, "checkpoints"),
        item_names=("state",),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        state = manager.restore(_STEP, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
        manager.close()
    state = state["state"]
    variables = {"params": state["params"], **(state.get("model_state") or {})}
    for name in [p for p in metadata["prefix"].split("/") if p]:
        variables = {k: v[name] for k, v in variables.items()}
    return model, jax.tree.map(jnp.asarray, variables)
