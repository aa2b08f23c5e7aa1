"""One device mesh with a `data` axis: batches split over it, the train state replicated or
sharded FSDP-style.

    mesh = make_mesh()                                   # every device of every process
    state_shardings = state_sharding(abstract_state, mesh, mode="replicated")  # or "fsdp"
    batch = shard_batch(host_batch, mesh, keys)          # this process's rows -> global array

The global batch is split along its first axis over all devices (per-device batch = global
batch / device count); each process passes only the rows it loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.config import PARAM_SHARDINGS

__all__ = [
    "PARAM_SHARDINGS",
    "StepShardings",
    "batch_sharding",
    "fsdp_spec",
    "make_mesh",
    "per_process_batch_size",
    "put",
    "replicate",
    "replicated",
    "shard_batch",
    "state_sharding",
    "step_shardings",
]

AXIS = "data"


def make_mesh(devices: Any = None) -> Mesh:
    """Returns a 1-D mesh over `devices` (default: all devices of all processes), axis `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def per_process_batch_size(global_batch_size: int, *, what: str = "batch_size") -> int:
    """Returns the batch each process loads: `global_batch_size / process count`.

    Raises:
      ValueError: if `global_batch_size` is not a multiple of the device count (every
        device must get the same number of images: per-device batch = global / devices).
    """
    devices, processes = jax.device_count(), jax.process_count()
    if global_batch_size < 1 or global_batch_size % devices:
        raise ValueError(
            f"config.{what} = {global_batch_size} must be a positive multiple of the device "
            f"count {devices} ({processes} process(es) x {jax.local_device_count()} local "
            f"devices): the global batch is split evenly, per-device batch = global / "
            f"{devices}. Try {max(1, global_batch_size // devices) * devices} or "
            f"{(global_batch_size // devices + 1) * devices}."
        )
    return global_batch_size // processes


def replicated(mesh: Mesh) -> NamedSharding:
    """Returns the sharding that keeps a whole copy of an array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Returns the sharding that splits an array's first (batch) axis over `data`."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, keys: tuple[str, ...]) -> dict:
    """Returns `batch[keys]` as global arrays split over the mesh's `data` axis.

    `batch` holds this process's rows only (its share of the global batch, in process order).
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Returns `tree` with every array replicated on all devices of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def put(tree: Any, shardings: Any) -> Any:
    """Returns the host arrays of `tree` as global arrays with `shardings` (a matching tree).

    Every process passes the same whole values and keeps only the pieces its devices hold;
    unlike `jax.device_put`, this works for any sharding in a multi-process job.
    """

    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def fsdp_spec(shape: tuple[int, ...], num_shards: int) -> PartitionSpec:
    """Returns the PartitionSpec that splits the largest axis of `shape` divisible by `num_shards`.

    Ties go to the last such axis (a conv kernel `[kh, kw, C_in, C_out]` is split on C_out
    when C_in == C_out). Arrays with no such axis (scalars, odd sizes) are replicated.
    """
    best = None
    for axis, size in enumerate(shape):
        if size >= num_shards and size % num_shards == 0:
            if best is None or size >= shape[best]:
                best = axis
    if best is None or num_shards == 1:
        return PartitionSpec()
    return PartitionSpec(*([None] * best), AXIS)


def state_sharding(tree: Any, mesh: Mesh, *, mode: str = "replicated") -> Any:
    """Returns a tree of `NamedSharding`s like `tree` (arrays or `jax.ShapeDtypeStruct`s).

    Args:
      tree: the train state (or any pytree of arrays / shape structs).
      mesh: the device mesh.
      mode: 'replicated' (a whole copy on every device; plain data parallelism) or 'fsdp'
        (each array split along its largest axis divisible by the device count, see
        `fsdp_spec`: parameters and optimiser state take 1/devices of the memory, XLA
        gathers them where a layer needs them).

    Raises:
      ValueError: for an unknown mode.
    """
    if mode not in PARAM_SHARDINGS:
        raise ValueError(f"sharding mode must be one of {PARAM_SHARDINGS}, got {mode!r}")
    if mode == "replicated":
        return jax.tree_util.tree_map(lambda _: replicated(mesh), tree)
    num_shards = mesh.shape[AXIS]
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, fsdp_spec(tuple(np.shape(x)), num_shards)), tree
    )


@dataclasses.dataclass(frozen=True)
class StepShardings:
    """The shardings a jitted train / eval step is compiled for.

    Attributes:
      state: a `TrainState` of `NamedSharding`s (one per array).
      batch: the sharding of every batch entry (first axis split over `data`).
      replicated: the sharding of metrics and evaluation counts.
    """

    state: Any
    batch: NamedSharding
    replicated: NamedSharding

    @property
    def variables(self) -> dict[str, Any]:
        """Returns the shardings of `state.variables` (`{'params': ..., **model_state}`)."""
        return {"params": self.state.params, **self.state.model_state}

    @property
    def platform(self) -> str:
        """Returns the platform of the devices the step runs on ('cpu', 'gpu', 'tpu')."""
        return next(iter(self.batch.device_set)).platform


def step_shardings(abstract_state: Any, mesh: Mesh, *, mode: str = "replicated") -> StepShardings:
    """Returns the shardings of a train step over `mesh` for a `TrainState` like `abstract_state`.

    Parameters, model state and optimiser state follow `mode` (see `state_sharding`); the
    step counter and the PRNG key are always replicated.
    """
    state = state_sharding(abstract_state, mesh, mode=mode)
    state = state.replace(step=replicated(mesh), rng=replicated(mesh))
    return StepShardings(state=state, batch=batch_sharding(mesh), replicated=replicated(mesh))
