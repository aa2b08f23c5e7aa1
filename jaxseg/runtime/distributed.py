"""Multi-host set-up: when to call `jax.distributed.initialize()`, and host-side gathers.

jaxseg runs on several machines through JAX's multi-controller runtime: the same program
starts once per process (a TPU pod host, a SLURM task, a GPU node), every process sees all
devices through one mesh, loads its own share of each batch, and runs the same jitted
steps. `initialize(config.distributed)` must run before anything touches a device.

When to initialise (`config.distributed.initialize`):

- 'auto' (default): when the config names a coordinator or more than one process, or the
  environment says the job has several processes: `JAX_COORDINATOR_ADDRESS`, a SLURM job
  of several tasks (`SLURM_NTASKS` > 1), an Open MPI job (`OMPI_COMM_WORLD_SIZE` > 1), a
  multi-host Cloud TPU slice (`TPU_WORKER_HOSTNAMES` with several hosts, or
  `MEGASCALE_COORDINATOR_ADDRESS`). A single process is left alone.
- 'yes': always (JAX then detects the cluster itself; what a TPU pod whose hosts are only
  known from the GCE metadata server needs).
- 'no': never.

Unset fields (`coordinator_address` '', `num_processes` 0, `process_id` -1) are left for
JAX to detect from the cluster environment.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jaxseg.config import INITIALIZE_MODES

T = TypeVar("T")

__all__ = [
    "INITIALIZE_MODES",
    "gather",
    "initialize",
    "is_main_process",
    "main_process_first",
    "multiprocess_env",
]


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def multiprocess_env() -> str | None:
    """Returns the name of the multi-process launcher the environment shows, else None."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if "SLURM_JOB_ID" in os.environ and max(_int_env("SLURM_NTASKS"), _int_env("SLURM_NPROCS")) > 1:
        return "SLURM"
    if _int_env("OMPI_COMM_WORLD_SIZE") > 1:
        return "Open MPI"
    if len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "Cloud TPU (TPU_WORKER_HOSTNAMES)"
    if os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "Cloud TPU multislice"
    return None


def initialize(settings: ml_collections.ConfigDict) -> bool:
    """Calls `jax.distributed.initialize()` when `settings` or the environment ask for it.

    Args:
      settings: `config.distributed`: `initialize` ('auto', 'yes', 'no'),
        `coordinator_address` ('host:port', '' = detect), `num_processes` (0 = detect),
        `process_id` (-1 = detect).

    Returns:
      True if this process is (now, or already was) part of a multi-process job.

    Raises:
      ValueError: for an unknown `initialize` mode.
    """
    mode = settings.initialize
    if mode not in INITIALIZE_MODES:
        raise ValueError(
            f"config.distributed.initialize must be one of {INITIALIZE_MODES}, got {mode!r}"
        )
    if jax.distributed.is_initialized():
        return True
    explicit = bool(settings.coordinator_address) or int(settings.num_processes) > 1
    launcher = multiprocess_env()
    if mode == "no" or (mode == "auto" and not explicit and launcher is None):
        return False
    kwargs: dict[str, Any] = {}
    if settings.coordinator_address:
        kwargs["coordinator_address"] = settings.coordinator_address
    if int(settings.num_processes) > 0:
        kwargs["num_processes"] = int(settings.num_processes)
    if int(settings.process_id) >= 0:
        kwargs["process_id"] = int(settings.process_id)
    logging.info(
        "jax.distributed.initialize(%s) (%s)",
        kwargs,
        launcher or ("config.distributed" if explicit else "initialize='yes'"),
    )
    jax.distributed.initialize(**kwargs)
    logging.info(
        "process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_main_process() -> bool:
    """Returns True on process 0, the one that writes logs, metrics and pictures."""
    return jax.process_index() == 0


# How long the other processes wait for process 0 in `main_process_first`: a first build of a
# large dataset (COCO from its archives) takes hours.
MAIN_FIRST_TIMEOUT_S = 24 * 3600
_main_first_calls = itertools.count()


def main_process_first(fn: Callable[[], T]) -> T:
    """Returns `fn()`, run on process 0 first and on the other processes after it.

    For the first use of a dataset: process 0 builds it while the others wait at a barrier
    of the coordination service (no device is touched), then they find it built and only
    read it. Several processes building at once would write the same files. If `fn` raises
    on process 0, the others still pass the barrier and run `fn`, so every process stops
    with its own error rather than waiting. Every process must call this, in the same order.
    """
    # Private, as orbax reads it too: this process's client of the coordination service.
    # Read there rather than through jax.process_index(), which would start the devices.
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    if state.client is None or (state.num_processes or 1) == 1:
        return fn()
    main = state.process_id == 0
    error = None
    if main:
        try:
            result = fn()
        except Exception as e:
            error = e
    key = f"jaxseg_main_process_first_{next(_main_first_calls)}"
    state.client.wait_at_barrier(key, MAIN_FIRST_TIMEOUT_S * 1000)
    if error is not None:
        raise error
    if not main:
        result = fn()
    return result


def gather(tree: Any) -> Any:
    """Returns `tree` as numpy arrays holding the global values, on every process.

    A fully replicated array is read from a local device; any other global array (split
    over the batch or, with FSDP, over a parameter axis) is all-gathered across processes,
    so every process must call this at the same point. Non-array leaves pass through.
    """

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)
