"""Process set-up shared by training and evaluation: the persistent compilation cache."""

from __future__ import annotations

import os

import jax
from absl import logging

__all__ = ["setup_compilation_cache"]

ENV_VAR = "JAXSEG_COMPILATION_CACHE"


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
