"""Non-finite losses and gradients: skip the update on device, count and stop on the host.

Inside the jitted step, `keep_if_finite` selects the old parameters, model state and
optimiser state when the loss or any gradient is NaN or Inf (`jnp.where` on every leaf,
no host round-trip); the step counter still advances, so the data position and the
per-step PRNG key (`fold_in(rng, step)`) stay those of an uninterrupted run.

On the host, `NonFiniteMonitor` reads each step's flag one step late (so reading it does
not stall the device), logs every skipped step with its number and raises
`NonFiniteError` after `config.max_consecutive_nonfinite` in a row. `all_finite` also
guards every checkpoint: a state holding NaN or Inf is never saved.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

__all__ = [
    "NonFiniteError",
    "NonFiniteMonitor",
    "all_finite",
    "finite_mean_metrics",
    "keep_if_finite",
]

SKIPPED_KEY = "nonfinite"  # the step's metric: 1.0 where the update was skipped, else 0.0


class NonFiniteError(RuntimeError):
    """Raised when training stops after too many non-finite steps in a row."""


def all_finite(tree: Any) -> jax.Array:
    """Returns a bool scalar: True iff every floating-point leaf of `tree` is finite."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


_all_finite_jit = jax.jit(all_finite)


def tree_is_finite(tree: Any) -> bool:
    """Returns `all_finite(tree)` as a Python bool (one small jitted reduction)."""
    return bool(jax.device_get(_all_finite_jit(tree)))


def keep_if_finite(old_state: Any, new_state: Any, loss: jax.Array, grads: Any):
    """Returns `(state, finite)`: `new_state`, or `old_state` with the new step if not finite.

    Traced inside the train step. Only `step` moves on a skipped step: the parameters,
    the model state (e.g. BatchNorm statistics) and the optimiser state stay as they were.

    Args:
      old_state, new_state: `TrainState`s before and after the update.
      loss: float32 scalar loss of the step.
      grads: the gradient tree.
    """
    finite = jnp.isfinite(loss) & all_finite(grads)

    def select(new, old):
        return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)

    state = new_state.replace(
        params=select(new_state.params, old_state.params),
        model_state=select(new_state.model_state, old_state.model_state),
        opt_state=select(new_state.opt_state, old_state.opt_state),
    )
    return state, finite


def finite_mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Returns the mean of each logged scalar over the finite steps of `history`.

    Also `nonfinite_steps`, the number of skipped steps in `history` (the means are NaN
    only if every step was skipped).
    """
    history = jax.device_get(history)
    skipped = np.array([float(h.get(SKIPPED_KEY, 0.0)) > 0 for h in history])
    kept = [h for h, s in zip(history, skipped, strict=True) if not s] or history
    summary = {k: float(np.mean([h[k] for h in kept])) for k in history[0] if k != SKIPPED_KEY}
    summary["nonfinite_steps"] = float(skipped.sum())
    return summary


class NonFiniteMonitor:
    """Counts skipped (non-finite) steps on the host, one step behind the device.

    Args:
      max_consecutive: how many skipped steps in a row stop training.
    """

    def __init__(self, max_consecutive: int):
        self.max_consecutive = int(max_consecutive)
        self.consecutive = 0
        self.total = 0
        self._pending: tuple[int, dict[str, jax.Array]] | None = None

    def push(self, step: int, metrics: dict[str, jax.Array]) -> None:
        """Records step `step`'s metrics; checks the previous step's (already computed)."""
        previous, self._pending = self._pending, (step, metrics)
        if previous is not None:
            self._check(*previous)

    def flush(self) -> None:
        """Checks the pending step now (before a checkpoint, an evaluation, the end)."""
        previous, self._pending = self._pending, None
        if previous is not None:
            self._check(*previous)

    def _check(self, step: int, metrics: dict[str, jax.Array]) -> None:
        if float(jax.device_get(metrics[SKIPPED_KEY])) == 0.0:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        loss, grad_norm = jax.device_get((metrics["loss"], metrics["grad_norm"]))
        logging.warning(
            "step %d: non-finite loss or gradients (loss %s, gradient norm %s); update "
            "skipped (%d in a row, %d in this run)",
            step,
            loss,
            grad_norm,
            self.consecutive,
            self.total,
        )
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(
                f"training stopped at step {step}: {self.consecutive} steps in a row had a "
                f"non-finite loss or gradients (config.max_consecutive_nonfinite = "
                f"{self.max_consecutive}). None of their updates was applied and no "
                "checkpoint holds NaN or Inf, so the latest checkpoint is intact. Lower the "
                "learning rate, add warm-up or gradient clipping "
                "(config.optimizer.grad_clip_norm), or check the data."
            )
