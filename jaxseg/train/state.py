"""The train state: everything a step changes and a checkpoint must hold."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax

__all__ = ["TrainState"]


@flax.struct.dataclass
class TrainState:
    """A pytree of the training state (a `flax.struct` dataclass, checkpointed whole).

    Attributes:
      step: int32 scalar, the number of optimiser steps taken.
      params: the model's `'params'` collection.
      model_state: the model's other collections (e.g. `{'batch_stats': ...}`), `{}` if none.
      opt_state: the optax state.
      rng: uint32 [2] raw PRNG key; step t uses `fold_in(rng, t)`.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        """Returns `{'params': ..., **model_state}`, ready for `model.apply`."""
        return {"params": self.params, **self.model_state}
