"""Shared fixtures for the model tests.

Compiling a network's `init` (its forward pass plus one random draw per parameter) costs
seconds on XLA:CPU; tests that do not check the initialisation itself draw their variables
with NumPy from `jax.eval_shape(model.init, ...)` instead.
"""

import jax
import numpy as np
import pytest


@pytest.fixture
def make_key():
    """Returns `seed -> PRNG key` of the 'rbg' kind, which compiles faster than threefry."""
    return lambda seed=0: jax.random.key(seed, impl="rbg")


@pytest.fixture
def random_variables():
    """Returns `(model, example, seed) -> variables` drawn with NumPy.

    Kernels N(0, 1 / fan_in), other params N(0, 0.1) (plus 1 for BatchNorm scales),
    running means N(0, 0.1), running variances U(0.5, 2).
    """

    def draw(model, example, seed=0):
        shapes = jax.eval_shape(model.init, jax.random.key(0), example)
        rng = np.random.default_rng(seed)

        def leaf(path, shape):
            name = str(getattr(path[-1], "key", path[-1]))
            if name == "var":
                value = rng.uniform(0.5, 2.0, size=shape.shape)
            elif name == "kernel":
                value = rng.normal(size=shape.shape) / np.sqrt(np.prod(shape.shape[:-1]))
            else:
                value = (name == "scale") + 0.1 * rng.normal(size=shape.shape)
            return np.asarray(value, shape.dtype)

        return jax.tree_util.tree_map_with_path(leaf, shapes)

    return draw


@pytest.fixture
def torchvision_variables():
    """Returns `state_dict -> variables`: torchvision weights through `jaxseg.convert`.

    The arch is told by the state dict's keys (`guess_arch`); the converter is the one
    torchvision-to-jaxseg mapping in the codebase (ImageNet classifiers lose `fc`).
    """
    from jaxseg.convert import from_torchvision, guess_arch

    def convert(state_dict):
        arch = guess_arch(set(state_dict))
        assert arch is not None, "not a torchvision state dict the converter knows"
        return from_torchvision(state_dict, arch)[1]

    return convert
