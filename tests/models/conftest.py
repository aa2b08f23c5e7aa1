"""Shared fixtures for the model tests.

Compiling a network's `init` (its forward pass plus one random draw per parameter) costs
seconds on XLA:CPU; tests that do not check the initialisation itself draw their variables
with NumPy from `jax.eval_shape(model.init, ...)` instead.
"""

import jax
import jax.numpy as jnp
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
    """Returns `state_dict -> variables`: torchvision ResNet / FCN weights in our layout.

    The tests' own small converter (`fc`, the ImageNet classifier, is dropped).
    """
    return _torch_state_to_variables


def _torch_state_to_variables(state_dict):
    head_names = {"0": "conv", "1": "bn", "4": "score"}
    params, stats = {}, {}
    for key, tensor in state_dict.items():
        *path, leaf = key.split(".")
        if leaf == "num_batches_tracked" or path[0] == "fc":
            continue
        names = []
        i = 0
        while i < len(path):
            part = path[i]
            if part.startswith("layer"):  # layer1.0 -> layer1_0
                names.append(f"{part}_{path[i + 1]}")
                i += 2
            elif part == "downsample":  # downsample.0 / .1 -> downsample_conv / _bn
                names.append("downsample_conv" if path[i + 1] == "0" else "downsample_bn")
                i += 2
            elif part in ("classifier", "aux_classifier"):
                names += [part, head_names[path[i + 1]]]
                i += 2
            else:
                names.append(part)
                i += 1
        value = tensor.detach().numpy()
        if leaf == "weight" and value.ndim == 4:
            target, leaf_name, value = params, "kernel", value.transpose(2, 3, 1, 0)
        elif leaf == "weight":
            target, leaf_name = params, "scale"
        elif leaf == "bias":
            target, leaf_name = params, "bias"
        else:
            target, leaf_name = stats, {"running_mean": "mean", "running_var": "var"}[leaf]
        node = target
        for name in names:
            node = node.setdefault(name, {})
        node[leaf_name] = jnp.asarray(value)
    return {"params": params, "batch_stats": stats}
