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

A lost process (killed, crashed, its host gone) would leave the others waiting in a
collective. With several processes, `initialize` starts a watchdog thread: every process
ticks a counter in the coordination service's key-value store, and a process whose counter
stops for `config.distributed.lost_process_timeout_s` (or that reports a failure) is lost:
the others log one line naming it and exit with status `LOST_PROCESS_EXIT_CODE`, whatever
their main thread waits on. JAX's own heartbeat (which aborts the process with its own
message) is set a little later as a backstop. When process 0, which hosts the coordination
service, is lost, JAX ends the others at once (status 134, its message, no Python run
after it); each of them has a sentinel child (`coordinator_sentinel`) that then logs the
line naming process 0.
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jaxseg.config import INITIALIZE_MODES
from jaxseg.runtime.coordinator_sentinel import CoordinatorSentinel

T = TypeVar("T")

__all__ = [
    "INITIALIZE_MODES",
    "LOST_PROCESS_EXIT_CODE",
    "coordination",
    "gather",
    "initialize",
    "is_main_process",
    "main_process_first",
    "mark_failed",
    "mark_finished",
    "multiprocess_env",
]

# EX_TEMPFAIL: the job failed for a reason a restart cures (a lost process, not a bug).
LOST_PROCESS_EXIT_CODE = 75
DEFAULT_LOST_PROCESS_TIMEOUT_S = 60.0
# JAX's heartbeat timeout is ours plus this, so that the watchdog speaks first.
HEARTBEAT_MARGIN_S = 30


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

    With several processes it also starts the lost-process watchdog (see the module's
    docstring).

    Args:
      settings: `config.distributed`: `initialize` ('auto', 'yes', 'no'),
        `coordinator_address` ('host:port', '' = detect), `num_processes` (0 = detect),
        `process_id` (-1 = detect), `lost_process_timeout_s` (seconds; 60 if absent).

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
    timeout_s = float(settings.get("lost_process_timeout_s", DEFAULT_LOST_PROCESS_TIMEOUT_S))
    if jax.distributed.is_initialized():
        _start_watchdog(timeout_s)
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
    kwargs["heartbeat_timeout_seconds"] = int(timeout_s) + HEARTBEAT_MARGIN_S
    logging.info(
        "jax.distributed.initialize(%s) (%s)",
        kwargs,
        launcher or ("config.distributed" if explicit else "initialize='yes'"),
    )
    # JAX's preemption service would install a C++ SIGTERM handler that only records the
    # notice for `reached_preemption_sync_point`, which jaxseg does not use (StopAgreement
    # does its work): a SIGTERM while compiling or restoring would be swallowed, and the
    # run would train on. Without it SIGTERM keeps its default until the loop's guard.
    preemption_service = jax.config.jax_enable_preemption_service
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(**kwargs)
    finally:
        jax.config.update("jax_enable_preemption_service", preemption_service)
    logging.info(
        "process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    _start_watchdog(timeout_s)
    return True


def coordination() -> tuple[Any, int, int] | None:
    """Returns `(client, process_id, num_processes)` of the coordination service, or None.

    None with one process. The client is JAX's own (private; orbax reads it too), read
    without touching the devices. Its key-value store and barriers carry the agreements
    between processes that no device collective should carry.
    """
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    if state.client is None or (state.num_processes or 1) == 1:
        return None
    return state.client, int(state.process_id), int(state.num_processes)


class _Watchdog:
    """Ends this process with one clear line when another process of the job is lost.

    Every `interval` seconds: tick this process's counter, read all processes' entries
    (one request each), and call a process lost whose counter has not moved for
    `timeout_s` seconds, or that reported a failure (`mark_failed`) and did not finish
    within `interval` seconds more (unless this one failed too: each then stops with its
    own error). Processes that finished (`mark_finished`) are left out. Runs in a
    thread, so a main thread blocked in a collective, a barrier or an evaluation does not
    stop it.
    """

    PREFIX = "jaxseg_watchdog"

    def __init__(self, client, process_id: int, num_processes: int, timeout_s: float):
        self.client, self.process_id, self.num_processes = client, process_id, num_processes
        self.timeout_s = timeout_s
        self.interval = min(5.0, max(0.2, timeout_s / 10))
        self.stopped = threading.Event()
        self.failed = False
        self.exit_code = 1  # of this process, if it failed
        self.settled = False  # every other process finished or stopped
        self.thread = threading.Thread(target=self._run, name="jaxseg-watchdog", daemon=True)
        self.sentinel: CoordinatorSentinel | None = None  # on processes other than 0

    def _key(self, what: str, process: int) -> str:
        return f"{self.PREFIX}/{what}/{process}"

    def _run(self) -> None:
        others = [p for p in range(self.num_processes) if p != self.process_id]
        now = time.monotonic()
        last_value: dict[int, str | None] = dict.fromkeys(others)
        last_change = dict.fromkeys(others, now)
        failed_since: dict[int, float] = {}
        reachable_at, ticks = now, 0
        while not self.stopped.is_set():
            ticks += 1
            now = time.monotonic()
            try:
                self.client.key_value_set(
                    self._key("alive", self.process_id), str(ticks), allow_overwrite=True
                )
                entries = dict(self.client.key_value_dir_get(f"{self.PREFIX}/"))
            except Exception as e:  # the coordination service (in process 0) is gone
                if now - reachable_at > self.timeout_s and not self.stopped.is_set():
                    self._exit(0, f"the coordination service it hosts is unreachable ({e})")
                self.stopped.wait(self.interval)
                continue
            reachable_at = now
            self.settled = all(
                self._key("done", p) in entries or self._key("failed", p) in entries for p in others
            )
            for process in others:
                if self._key("done", process) in entries:
                    continue
                if self._key("failed", process) in entries and not self.failed:
                    since = failed_since.setdefault(process, now)
                    if now - since >= self.interval:
                        self._exit(process, "it stopped with an error (see its log)")
                value = entries.get(self._key("alive", process))
                if value != last_value[process]:
                    last_value[process], last_change[process] = value, now
                elif now - last_change[process] > self.timeout_s:
                    self._exit(
                        process,
                        f"no sign of life for {now - last_change[process]:.0f} s "
                        "(killed, crashed, or its host is down)",
                    )
            self.stopped.wait(self.interval)

    def _exit(self, process: int, why: str) -> None:
        if self.stopped.is_set():  # finished meanwhile: nothing is waiting for it
            return
        message = (
            f"process {process} of {self.num_processes} is lost: {why}. Stopping process "
            f"{self.process_id} too (exit {LOST_PROCESS_EXIT_CODE}). Restart all "
            f"{self.num_processes} processes: training resumes from the last complete checkpoint."
        )
        if self.sentinel is not None:  # this line says it all
            self.sentinel.finished()
        self.mark("failed")  # the others stop at once rather than wait for this one
        logging.error("%s", message)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # os._exit: the main thread may be blocked in C++ (a collective), and exit handlers
        # would wait at jax.distributed's shutdown barrier for the lost process.
        os._exit(LOST_PROCESS_EXIT_CODE)

    def mark(self, what: str) -> None:
        try:
            self.client.key_value_set(self._key(what, self.process_id), "1", allow_overwrite=True)
        except Exception as e:
            logging.warning("could not tell the other processes this one %s: %s", what, e)


_watchdog: _Watchdog | None = None


def _start_watchdog(timeout_s: float) -> None:
    global _watchdog
    found = coordination()
    if found is None or _watchdog is not None:
        return
    _watchdog = _Watchdog(*found, timeout_s)
    from jax._src import distributed as jax_distributed

    address = jax_distributed.global_state.coordinator_address
    if _watchdog.process_id > 0 and address:  # process 0 hosts the service: the one lost
        _watchdog.sentinel = CoordinatorSentinel(
            address, _watchdog.process_id, _watchdog.num_processes
        )
    _watchdog.thread.start()
    atexit.register(_at_exit)  # runs before jax.distributed.shutdown (registered earlier)


def _at_exit() -> None:
    """A clean exit finishes; a process that failed waits for the others' verdict first.

    After an error the others may be lost (a killed peer also breaks this process's
    collective) or on their way out: watch until each has finished or stopped (or the
    watchdog names one lost and exits), then leave without jax.distributed's shutdown,
    whose barrier would wait for processes that are gone.
    """
    watchdog = _watchdog
    if watchdog is None or watchdog.stopped.is_set():
        return
    if not watchdog.failed:
        mark_finished()
        return
    deadline = time.monotonic() + watchdog.timeout_s + 2 * watchdog.interval
    while not watchdog.settled and time.monotonic() < deadline:
        time.sleep(0.1)
    watchdog.stopped.set()
    watchdog.thread.join(timeout=10)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(watchdog.exit_code)


def mark_finished() -> None:
    """Tells the watchdogs of the other processes that this one is done with collectives.

    A process that finished leaving early is not lost; this one stops watching too.
    """
    if _watchdog is not None and not _watchdog.stopped.is_set():
        if not _watchdog.failed:
            _watchdog.mark("done")
        _watchdog.stopped.set()
        # Out of its request before the interpreter exits (see StopAgreement.close).
        _watchdog.thread.join(timeout=10)
        if _watchdog.sentinel is not None and not _watchdog.failed:
            _watchdog.sentinel.finished()


def mark_failed(exit_code: int = 1) -> None:
    """Tells the other processes that this one stopped with an error, so they stop too.

    Without it they could wait for it in a collective until its heartbeat times out. At
    exit this process then ends with `exit_code` once the others have stopped (`_at_exit`).
    """
    if _watchdog is not None and not _watchdog.stopped.is_set() and not _watchdog.failed:
        _watchdog.failed = True
        _watchdog.exit_code = exit_code
        if _watchdog.sentinel is not None:  # silent unless the error came from a lost process 0
            _watchdog.sentinel.failed()
        _watchdog.mark("failed")


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
    found = coordination()  # not jax.process_index(), which would start the devices
    if found is None:
        return fn()
    client, process_id, _ = found
    main = process_id == 0
    error = None
    if main:
        try:
            result = fn()
        except Exception as e:
            error = e
    key = f"jaxseg_main_process_first_{next(_main_first_calls)}"
    client.wait_at_barrier(key, MAIN_FIRST_TIMEOUT_S * 1000)
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
