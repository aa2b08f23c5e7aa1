"""Staged training: start a net from another run's checkpoint (16s from 32s, 8s from 16s).

Parameters that exist in both nets with the same path and shape are copied; the others
(the finer net's new score layers) keep their initialisation (zero for FCN score layers,
so the finer net starts out computing exactly what the coarser one did).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from jaxseg.train.checkpointing import Checkpointer, check_compatible, checkpoint_directory

__all__ = ["merge_matching", "read_variables"]


def read_variables(path: str) -> tuple[dict[str, Any], str]:
    """Returns `({'params': ..., **other collections}, description)` of a run's checkpoint.

    Args:
      path: a workdir or its checkpoints folder; its best checkpoint (else its latest).

    Raises:
      ValueError: if `path` holds no checkpoint.
    """
    directory = checkpoint_directory(path)
    checkpointer = Checkpointer(directory, create=False)
    try:
        step = checkpointer.best_step()
        if step is None:
            raise ValueError(f"config.init_from: no checkpoint in {directory}")
        saved = checkpointer.restore_raw(step)
    finally:
        checkpointer.close()
    return {
        "params": saved["params"],
        **(saved.get("model_state") or {}),
    }, f"{directory} step {step}"


def merge_matching(target: Any, source: Any, *, what: str = "init_from") -> Any:
    """Returns `target` with the leaves that `source` has at the same path.

    Args:
      target: nested dict of arrays (the new net's freshly initialised variables).
      source: nested dict of arrays (a checkpoint's).
      what: the source, for messages.

    Raises:
      ValueError: if a path exists in both with different shapes (e.g. another num_classes).
    """
    check_compatible(target, source, what=what)
    flat_target = traverse_util.flatten_dict(target, sep="/")
    flat_source = traverse_util.flatten_dict(source, sep="/")
    merged, kept = {}, []
    for path, value in flat_target.items():
        if path in flat_source:
            merged[path] = jnp.asarray(np.asarray(flat_source[path]), value.dtype)
        else:
            merged[path] = value
            kept.append(path)
    logging.info(
        "%s: copied %d of %d arrays; initialised afresh: %s",
        what,
        len(flat_target) - len(kept),
        len(flat_target),
        kept or "none",
    )
    return traverse_util.unflatten_dict(merged, sep="/")
