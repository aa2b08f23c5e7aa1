"""The jit-compiled training and evaluation steps of a task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxseg import compiler_options
from jaxseg.runtime.nonfinite import SKIPPED_KEY, keep_if_finite
from jaxseg.runtime.sharding import StepShardings
from jaxseg.tasks.base import Task
from jaxseg.train.state import TrainState

__all__ = ["make_eval_step", "make_train_step"]


def make_train_step(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    shardings: StepShardings | None = None,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns `train_step(state, batch) -> (state, metrics)`, jitted, the state donated.

    `metrics` holds the loss, the task's scalars, the gradient's global norm, the
    learning rate of the step and `nonfinite` (1.0 if the loss or a gradient was NaN or
    Inf: then the update is not applied, see `jaxseg.runtime.nonfinite`), all float32 scalars.
    With `shardings`, the step is compiled for them (`jaxseg.runtime.sharding.step_shardings`):
    the state keeps its sharding from step to step and the metrics come back replicated.
    """

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
        (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            **metrics,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state
        )
        new_state, finite = keep_if_finite(state, new_state, loss, grads)
        metrics[SKIPPED_KEY] = jnp.where(finite, 0.0, 1.0).astype(jnp.float32)
        return new_state, metrics

    if shardings is None:
        return compiler_options.jit(train_step, donate_argnums=0)
    return compiler_options.jit(
        train_step,
        platform=shardings.platform,
        donate_argnums=0,
        in_shardings=(shardings.state, shardings.batch),
        out_shardings=(shardings.state, shardings.replicated),
    )


def make_eval_step(
    task: Task, *, shardings: StepShardings | None = None
) -> Callable[[dict[str, Any], dict[str, jax.Array]], Any]:
    """Returns `eval_step(variables, batch) -> counts`, jitted (see `Task.eval_step`).

    With `shardings`, the counts come back replicated: summed over the whole global batch,
    every process holds them.
    """
    if shardings is None:
        return compiler_options.jit(task.eval_step)
    return compiler_options.jit(
        task.eval_step,
        platform=shardings.platform,
        in_shardings=(shardings.variables, shardings.batch),
        out_shardings=shardings.replicated,
    )
