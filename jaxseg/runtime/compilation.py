"""Process set-up shared by training and evaluation: the persistent compilation cache,
compile logging, and a counter of XLA compilations."""

from __future__ import annotations

import os
import threading

import jax
from absl import logging

__all__ = ["CompileCounter", "StepCompileLog", "setup_compilation_cache", "setup_log_compiles"]

ENV_VAR = "JAXSEG_COMPILATION_CACHE"
# The event jax records once per XLA compilation (a persistent-cache hit included).
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def setup_compilation_cache(directory: str) -> str | None:
    """Points JAX's persistent compilation cache at `directory` (or `$JAXSEG_COMPILATION_CACHE`).

    A second start of the same config then loads its compiled steps instead of compiling
    them again. Returns the directory used, or None when both are empty (no cache).
    """
    directory = os.environ.get(ENV_VAR, directory)
    if not directory:
        return None
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    # Cache every executable: on a CPU even the small ones take a second or two to build.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    logging.info("XLA compilation cache: %s", directory)
    return directory


def setup_log_compiles(enabled: bool) -> None:
    """Turns `jax_log_compiles` on (or off): every compilation is logged with its function
    name and, where it comes from a jit cache miss, the reason (new shapes, new shardings)."""
    jax.config.update("jax_log_compiles", bool(enabled))
    jax.config.update("jax_explain_cache_misses", bool(enabled))


class CompileCounter:
    """Counts XLA compilations (and their seconds) while it is open, by function name.

        with CompileCounter() as compiles:
            state, metrics = train_step(state, batch)
        compiles.count("train_step")

    Built on `jax.monitoring`'s backend-compile event, so it sees every `jit` in the process.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.events: list[tuple[str, float]] = []  # (function name, seconds)
        self._active = False

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if self._active and event == _COMPILE_EVENT:
            with self._lock:
                self.events.append((str(kwargs.get("fun_name", "")), float(duration)))

    def __enter__(self) -> CompileCounter:
        self._active = True
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        self._active = False
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            unregister(self._listener)

    def count(self, name: str | None = None) -> int:
        """Returns the number of compilations seen (of functions whose name holds `name`)."""
        with self._lock:
            return sum(1 for fun, _ in self.events if name is None or name in fun)

    def seconds(self) -> float:
        """Returns the total compile time seen."""
        with self._lock:
            return sum(d for _, d in self.events)


class StepCompileLog:
    """Logs how many compilations a loop's first step took, and warns of later ones.

    Call `after_step(step)` after every step and `close()` at the end. A step function
    compiled again after its first step means an input changed shape, dtype or sharding.
    """

    def __init__(self, name: str):
        self.name = name
        self._counter = CompileCounter().__enter__()
        self._seen: int | None = None

    def after_step(self, step: int) -> None:
        """Logs (first call) or checks (later calls) the compilations so far."""
        count = self._counter.count(self.name)
        if self._seen is None:
            logging.info(
                "step %d: %d compilation(s) so far (%.1f s), %d of %s",
                step,
                self._counter.count(),
                self._counter.seconds(),
                count,
                self.name,
            )
        elif count > self._seen:
            logging.warning(
                "%s compiled again at step %d: an input changed shape, dtype or sharding "
                "(the jax_log_compiles lines above say which)",
                self.name,
                step,
            )
        self._seen = count

    def close(self) -> None:
        """Stops counting."""
        self._counter.__exit__(None, None, None)
