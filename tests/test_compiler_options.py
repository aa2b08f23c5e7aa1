"""jaxseg.compiler_options: the CPU kernels jaxseg's own jits compile with."""

import jax
import numpy as np
import pytest

from jaxseg import compiler_options
from jaxseg.runtime import sharding

YNN = "__ynn_fusion"  # the fusion kind of a YNNPACK kernel in the compiled HLO
OPTION = next(iter(compiler_options.CPU_OPTIONS))


def _conv(x, w):
    return jax.lax.conv_general_dilated(
        x,
        w,
        (1, 1),
        ((2, 2), (2, 2)),
        rhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _inputs():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((1, 17, 17, 32)).astype(np.float32),
        rng.standard_normal((3, 3, 32, 32)).astype(np.float32),
    )


def test_cpu_programs_compile_without_ynnpack_and_give_the_same_numbers():
    x, w = _inputs()
    if YNN not in jax.jit(_conv).lower(x, w).compile().as_text():
        pytest.fail("this jaxlib no longer sends convolutions to YNNPACK: revisit CPU_OPTIONS")
    ours = compiler_options.jit(_conv)
    assert YNN not in ours.lower(x, w).compile().as_text()
    np.testing.assert_allclose(ours(x, w), jax.jit(_conv)(x, w), rtol=1e-4, atol=1e-4)


def test_options_only_on_cpu():
    assert compiler_options.compiler_options("cpu") == compiler_options.CPU_OPTIONS
    assert compiler_options.compiler_options("tpu") == {}
    assert compiler_options.compiler_options("gpu") == {}


def test_xla_flags_setting_the_option_win(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=1 --{OPTION}=x")
    assert compiler_options.compiler_options("cpu") == {}


def test_an_option_this_jaxlib_does_not_know_is_left_out(monkeypatch):
    monkeypatch.setattr(
        compiler_options, "CPU_OPTIONS", {"xla_cpu_no_such_option_anywhere": "", OPTION: ""}
    )
    assert compiler_options.compiler_options("cpu") == {OPTION: ""}
    x, w = _inputs()
    assert YNN not in compiler_options.jit(_conv).lower(x, w).compile().as_text()


def test_step_shardings_name_their_platform():
    mesh = sharding.make_mesh()
    shardings = sharding.StepShardings(
        state={}, batch=sharding.batch_sharding(mesh), replicated=sharding.replicated(mesh)
    )
    assert shardings.platform == "cpu"
