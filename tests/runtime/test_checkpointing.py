"""Checkpointer.restore_variables: the variables alone, from full or converted checkpoints."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.runtime.checkpointing import Checkpointer


def abstract(shape=(2, 3)):
    """A stand-in for the model's abstract train state: params and model_state only."""
    return types.SimpleNamespace(
        params={"conv": {"kernel": jax.ShapeDtypeStruct(shape, jnp.float32)}},
        model_state={"batch_stats": {"bn": {"mean": jax.ShapeDtypeStruct((3,), jnp.float32)}}},
    )


def save(directory, state):
    checkpointer = Checkpointer(str(directory))
    checkpointer.save(0, state, None)
    checkpointer.close()


def test_reads_a_checkpoint_without_optimizer_state(tmp_path):
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    mean = np.array([0.5, 1.5, 2.5], np.float32)
    save(
        tmp_path,
        {
            "step": 0,
            "params": {"conv": {"kernel": kernel}},
            "model_state": {"batch_stats": {"bn": {"mean": mean}}},
        },
    )
    checkpointer = Checkpointer(str(tmp_path), create=False)
    variables = checkpointer.restore_variables(0, abstract())
    checkpointer.close()
    np.testing.assert_array_equal(variables["params"]["conv"]["kernel"], kernel)
    np.testing.assert_array_equal(variables["batch_stats"]["bn"]["mean"], mean)


def test_names_missing_and_misshapen_arrays(tmp_path):
    save(
        tmp_path,
        {
            "step": 0,
            "params": {"conv": {"kernel": np.zeros((2, 3), np.float32)}},
            "model_state": {},
        },
    )
    checkpointer = Checkpointer(str(tmp_path), create=False)
    with pytest.raises(ValueError, match=r"(?s)lacks 1 of the model's arrays.*batch_stats/bn/mean"):
        checkpointer.restore_variables(0, abstract())
    no_state = types.SimpleNamespace(params=abstract((4, 3)).params, model_state={})
    with pytest.raises(ValueError, match=r"conv/kernel: checkpoint \(2, 3\), model \(4, 3\)"):
        checkpointer.restore_variables(0, no_state)
    checkpointer.close()
