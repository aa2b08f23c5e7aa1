"""One device mesh with a `data` axis: batches split over it, the train state replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["make_mesh", "per_process_batch_size", "replicate", "shard_batch"]


def make_mesh() -> Mesh:
    """Returns a 1-D mesh over all devices (all processes), axis name `data`.

    Shardings are left to the compiler (automatic axes): only the inputs are placed.
    """
    return Mesh(np.asarray(jax.devices()), ("data",))


def per_process_batch_size(global_batch_size: int) -> int:
    """Returns the batch each process loads; checks it splits over processes and devices.

    Raises:
      ValueError: if `global_batch_size` is not a multiple of the device count.
    """
    if global_batch_size % jax.device_count():
        raise ValueError(
            f"batch_size {global_batch_size} must be a multiple of the device count "
            f"{jax.device_count()}"
        )
    return global_batch_size // jax.process_count()


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, keys: tuple[str, ...]) -> dict:
    """Returns `batch[keys]` as global arrays split over the mesh's `data` axis."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Returns `tree` with every array replicated on all devices of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
