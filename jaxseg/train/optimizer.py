"""The optax optimiser and learning-rate schedule of a training config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(config: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
    """Returns the learning rate as a function of the step.

    Args:
      config: `config.optimizer`: `learning_rate`, `schedule` ('constant'; 'poly': lr *
        (1 - t / T) ** poly_power; 'step': multiplied by `decay_factor` at each of
        `decay_boundaries`, fractions of T; 'cosine'), `warmup_steps` (linear from 0).
      num_train_steps: T.
    """
    base = float(config.learning_rate)
    warmup = int(config.warmup_steps)
    decay_steps = max(1, num_train_steps - warmup)
    if config.schedule == "constant":
        main = optax.constant_schedule(base)
    elif config.schedule == "poly":
        main = optax.polynomial_schedule(
            init_value=base,
            end_value=0.0,
            power=float(config.poly_power),
            transition_steps=decay_steps,
        )
    elif config.schedule == "step":
        boundaries = {
            max(1, round(float(f) * num_train_steps) - warmup): float(config.decay_factor)
            for f in config.decay_boundaries
        }
        main = optax.piecewise_constant_schedule(base, boundaries)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(base, decay_steps)
    else:
        raise ValueError(f"unknown learning-rate schedule {config.schedule!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, base, warmup), main], boundaries=[warmup]
    )


def _decay_mask(params: Any) -> Any:
    """Returns bools like `params`: True on kernels (ndim > 1), False on biases and scales."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(
    config: ml_collections.ConfigDict,
    num_train_steps: int,
    trainable: Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """Returns the optimiser of `config.optimizer` with its schedule and weight decay.

    'sgd' (momentum, optionally Nesterov) and 'adam' add `weight_decay * kernel` to the
    gradient (L2, as Caffe and torch's SGD); 'adamw' decays decoupled from the gradient.
    Weight decay leaves biases and normalisation parameters alone. `grad_clip_norm` > 0
    clips the global gradient norm first.

    Args:
      config: `config.optimizer`.
      num_train_steps: the schedule's length.
      trainable: a function of the params that returns bools like them, False on frozen
        parameters (`Task.trainable`); those are never updated, weight decay included, as
        torch leaves parameters with `requires_grad=False` out of its optimiser. None:
        everything trains.
    """
    schedule = make_schedule(config, num_train_steps)
    decay = float(config.weight_decay)
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(config.grad_clip_norm)))
    if config.name in ("sgd", "adam") and decay > 0:
        parts.append(optax.masked(optax.add_decayed_weights(decay), _decay_mask))
    if config.name == "sgd":
        momentum = float(config.momentum) or None
        parts.append(optax.sgd(schedule, momentum=momentum, nesterov=bool(config.nesterov)))
    elif config.name == "adam":
        parts.append(optax.adam(schedule, b1=float(config.momentum)))
    elif config.name == "adamw":
        parts.append(
            optax.adamw(schedule, b1=float(config.momentum), weight_decay=decay, mask=_decay_mask)
        )
    else:
        raise ValueError(f"unknown optimizer {config.name!r}")
    if trainable is not None:  # last, so that nothing before it (weight decay) moves them

        def frozen(params):
            return jax.tree_util.tree_map(lambda train: not train, trainable(params))

        parts.append(optax.masked(optax.set_to_zero(), frozen))
    return optax.chain(*parts)
