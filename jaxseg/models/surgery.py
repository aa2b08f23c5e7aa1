"""Net surgery: initialise one model's variables from another's by name (staged FCN training).

The reference trains FCN-16s from FCN-32s and FCN-8s from FCN-16s by copying every layer the
two nets share (`surgery.transplant`): the VGG16 backbone and `score_fr` (and, when learnable,
`upscore2`); the new skip layers keep their zero initialisation. The same goes for
`FCNResNet` with and without `aux_classifier`, or an ImageNet backbone converted elsewhere.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["transplant"]


def transplant(source: Any, target: Any) -> tuple[Any, list[str]]:
    """Returns `(variables, copied)`: `target` with every leaf that `source` also has replaced.

    Args:
      source: nested dict of arrays (e.g. a checkpoint's `{'params': ..., 'batch_stats': ...}`).
      target: nested dict of arrays of the model to initialise (e.g. `model.init(...)`).

    Returns:
      The merged tree (target's structure; leaves at the same path taken from `source`,
      cast to the target leaf's dtype) and the copied paths, as `'params/backbone/fc6/kernel'`
      strings. Paths only in `source` are dropped; paths only in `target` keep its values.

    Raises:
      ValueError: a shared path with a different shape (e.g. another class count), naming
        the path and both shapes.
    """
    copied = []

    def take(path: tuple[Any, ...], leaf: Any) -> Any:
        node = source
        for key in path:
            name = getattr(key, "key", key)
            if not hasattr(node, "keys") or name not in node:
                return leaf
            node = node[name]
        name = "/".join(str(getattr(key, "key", key)) for key in path)
        if np.shape(node) != np.shape(leaf):
            raise ValueError(
                f"transplant: {name} has shape {np.shape(node)} in the source but "
                f"{np.shape(leaf)} in the target"
            )
        copied.append(name)
        return jnp.asarray(node, dtype=leaf.dtype)

    merged = jax.tree_util.tree_map_with_path(take, target)
    return merged, copied
