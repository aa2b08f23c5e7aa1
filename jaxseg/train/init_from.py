"""Staged training: start a net from another run's checkpoint (16s from 32s, 8s from 16s).

`read_variables` reads a run's best checkpoint; `jaxseg.models.transplant` then copies the
arrays that exist in both nets with the same path (the loop checks their shapes first);
the others (the finer net's new score layers) keep their zero initialisation.
"""

from __future__ import annotations

from typing import Any

from jaxseg.runtime.checkpointing import Checkpointer, checkpoint_directory

__all__ = ["read_variables"]


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
