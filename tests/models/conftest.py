"""Shared fixtures for the model tests."""

import jax
import pytest


@pytest.fixture
def make_key():
    """Returns `seed -> PRNG key` of the 'rbg' kind.

    Initialising a network draws one random tensor per parameter; XLA:CPU compiles 'rbg'
    draws several times faster than the default threefry ones, which dominates these tests.
    """
    return lambda seed=0: jax.random.key(seed, impl="rbg")
