"""The variables of a training workdir's checkpoint, or of a converted folder's."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import optax

from jaxseg.config import ConfigError
from jaxseg.convert.checkpoint import METADATA_FILE
from jaxseg.runtime import sharding
from jaxseg.runtime.checkpointing import Checkpointer
from jaxseg.runtime.compilation import setup_compilation_cache
from jaxseg.train.loop import abstract_train_state

__all__ = ["converted_metadata", "restore_variables"]


def restore_variables(task, config: ml_collections.ConfigDict, workdir: str, mesh):
    """Returns `(variables, step shardings, step, checkpoints folder)` of the best or
    configured step (`config.eval.checkpoint`): the variables as host (numpy) arrays,
    whatever devices wrote them.

    Raises:
      ValueError: no checkpoint, an unknown step, arrays that do not fit the model.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise ConfigError(
            f"no checkpoints in {directory}: train first (train.py --workdir {workdir})"
        )
    checkpointer = Checkpointer(directory, create=False, best_metric=task.best_metric)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise ConfigError(f"no checkpoints in {directory}: train first")
        step = int(config.eval.checkpoint)
        if step < 0:
            step = checkpointer.best_step()
        elif step not in steps:
            raise ConfigError(
                f"config.eval.checkpoint = {step}: no such step in {directory} {steps}"
            )
        setup_compilation_cache(config.compilation_cache_dir)
        # Only the variables: evaluation needs no optimiser (optax.identity has no state),
        # and a converted checkpoint (python -m jaxseg.convert) has none.
        abstract_state = abstract_train_state(task, optax.identity(), config, mesh)
        variables = checkpointer.restore_variables(step, abstract_state)
    finally:
        checkpointer.close()
    shardings = sharding.step_shardings(abstract_state, mesh, mode=config.sharding.params)
    return variables, shardings, step, directory


def converted_metadata(workdir: str) -> dict[str, Any] | None:
    """Returns the `jaxseg_convert.json` of a folder written by `python -m jaxseg.convert`,
    or None if `workdir` holds none."""
    path = os.path.join(workdir, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
