"""Tiny models' variables and workdirs for the evaluation tests, made without compiling."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.config import base_config


def numpy_variables(model, **kwargs):
    """Returns variables drawn with NumPy: compiling `init` costs up to a minute on XLA:CPU."""
    shapes = jax.eval_shape(
        lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), **kwargs), jax.random.key(0)
    )
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("var", "scale"):
            return np.ones(leaf.shape, leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1]) if name == "kernel" else 100.0
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def save_variables(workdir, variables):
    """Writes `variables` as a checkpoint at step 0, the layout eval.py restores."""
    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        item_names=("state",),
        options=ocp.CheckpointManagerOptions(create=True),
    )
    state = {
        "step": np.zeros((), np.int32),
        "params": variables["params"],
        "model_state": {k: v for k, v in variables.items() if k != "params"},
    }
    manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    manager.close()


def tiny_fcn_config(data_dir=""):
    """Returns an FCN-32s config at width 1/32 on `jaxseg_shapes/small` (in `data_dir`)."""
    config = base_config()
    config.model.name = "fcn32s"
    config.model.width = 0.03125
    config.dataset.config = "small"
    config.dataset.data_dir = str(data_dir)
    config.compilation_cache_dir = ""
    return config
