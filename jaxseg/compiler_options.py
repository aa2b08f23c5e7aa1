"""The XLA options jaxseg compiles its programs with, and `jit`, jax.jit with them.

On CPU, jax 0.10's XLA sends convolutions and matmuls to YNNPACK by default. On the 2-core
AVX-512 Intel machine of this project its convolutions, the backward ones above all, are much
slower than XLA's older Eigen kernels (BENCHMARKS.md, "CPU kernels": an FCN-8s train step
13.6 s against 6.0 s, FCN-ResNet50 inference 1.45 s against 1.19 s), so jaxseg's own jits
on CPU turn YNNPACK off (`xla_cpu_experimental_ynn_fusion_type` empty). The numbers are
the same up to float32 summation order.

Nothing is changed when the option is unknown to the installed jaxlib (a newer one may
rename it), off CPU, or when `XLA_FLAGS` already sets it (the user's choice wins). Your
own `jax.jit` of jaxseg modules gets the same kernels with
`compiler_options=jaxseg.compiler_options.compiler_options()`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["CPU_OPTIONS", "compiler_options", "jit"]

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(platform: str | None = None) -> dict[str, str]:
    """Returns the XLA options for a program compiled for `platform` (default jax's backend).

    `CPU_OPTIONS` on CPU where the installed jaxlib knows them and `XLA_FLAGS` does not set
    them; otherwise none.
    """
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return {}
    flags = os.environ.get("XLA_FLAGS", "")
    options = {name: value for name, value in CPU_OPTIONS.items() if f"--{name}" not in flags}
    return {name: value for name, value in options.items() if _known(name, value)}


@functools.cache
def _known(name: str, value: str) -> bool:
    """Whether the CPU compiler takes option `name=value` (a tiny compile, once a process)."""
    try:
        x = jax.device_put(np.float32(0), jax.local_devices(backend="cpu")[0])
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(x).compile()
    except Exception:  # an unknown option or value: a JaxRuntimeError (or a ValueError)
        return False
    return True


def jit(fun: Callable[..., Any], *, platform: str | None = None, **kwargs: Any) -> Any:
    """Returns `jax.jit(fun, **kwargs)` compiled with `compiler_options(platform)`."""
    return jax.jit(fun, compiler_options=compiler_options(platform) or None, **kwargs)
