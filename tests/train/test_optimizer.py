"""Learning-rate schedules and weight decay from the config."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.config import base_config
from jaxseg.train import make_optimizer, make_schedule


def _optimizer_config(**overrides):
    config = base_config().optimizer
    config.update(overrides)
    return config


def test_poly_schedule_matches_the_formula():
    schedule = make_schedule(_optimizer_config(learning_rate=0.1, schedule="poly"), 100)
    for step in (0, 10, 50, 99, 100):
        np.testing.assert_allclose(schedule(step), 0.1 * (1 - step / 100) ** 0.9, rtol=1e-5)


def test_step_schedule_decays_at_fractions_of_training():
    config = _optimizer_config(learning_rate=1.0, schedule="step", decay_boundaries=(0.5, 0.75))
    schedule = make_schedule(config, 100)
    np.testing.assert_allclose(
        [schedule(s) for s in (0, 49, 50, 74, 75, 99)], [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6
    )


def test_warmup_is_linear_then_the_schedule():
    config = _optimizer_config(learning_rate=1.0, schedule="constant", warmup_steps=10)
    schedule = make_schedule(config, 100)
    np.testing.assert_allclose(
        [schedule(0), schedule(5), schedule(10), schedule(60)], [0, 0.5, 1, 1]
    )


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_weight_decay_on_kernels_only(name):
    config = _optimizer_config(name=name, learning_rate=0.1, weight_decay=0.5, schedule="constant")
    optimizer = make_optimizer(config, 10)
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 2)), "bias": jnp.ones((2,))}}
    zero_grads = {"conv": {"kernel": jnp.zeros((3, 3, 2, 2)), "bias": jnp.zeros((2,))}}
    updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
    assert np.all(np.asarray(updates["conv"]["kernel"]) < 0)
    np.testing.assert_array_equal(updates["conv"]["bias"], 0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_frozen_parameters_get_no_update_not_even_weight_decay(name):
    config = _optimizer_config(
        name=name, learning_rate=0.1, weight_decay=0.5, schedule="constant", momentum=0.9
    )
    params = {"frozen": {"kernel": jnp.ones((3, 3))}, "train": {"kernel": jnp.ones((3, 3))}}

    def trainable(tree):
        return {"frozen": {"kernel": False}, "train": {"kernel": True}}

    optimizer = make_optimizer(config, 10, trainable)
    grads = {"frozen": {"kernel": jnp.full((3, 3), 2.0)}, "train": {"kernel": jnp.zeros((3, 3))}}
    state = optimizer.init(params)
    for _ in range(2):
        updates, state = optimizer.update(grads, state, params)
        np.testing.assert_array_equal(updates["frozen"]["kernel"], 0)
        assert np.all(np.asarray(updates["train"]["kernel"]) < 0)  # weight decay still acts
