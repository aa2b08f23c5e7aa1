"""The compile report: analytic FLOPs, HLO loop bounds and traffic, and whole reports.

`--local` reports compile the tiny FCN-8s and Mask R-CNN for this machine (CPU). The TPU
report (`--topology v5e:2x2`, no TPU needed) runs only where libtpu is installed
(`pip install 'jaxseg[tpu]'`); elsewhere it is reported as skipped, with that reason.
"""

import importlib.util
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.compile_report import analytic, hlo, target
from jaxseg.compile_report import loops as hlo_loops
from jaxseg.compile_report import traffic as hlo_traffic
from jaxseg.compile_report.report import compile_report, make_report_task
from jaxseg.compile_report.table import format_report
from jaxseg.config import base_config
from jaxseg.data import shapes
from jaxseg.testing import TINY_MASK_RCNN_NAME, set_tiny_mask_rcnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
NO_LIBTPU = (
    "libtpu is not installed: the deviceless TPU compile needs it "
    "(pip install 'jaxseg[tpu]'; a 213 MB download, 684 MB installed)"
)


def tiny_fcn_config():
    """The tiny FCN-8s of tests/train/conftest.py (32 px, width 1/32), batch 4."""
    config = base_config()
    config.model.name = "fcn8s"
    config.model.width = 0.03125
    config.model.dropout_rate = 0.0
    config.dataset.config = "small"
    config.dataset.image_size = 32
    config.dataset.eval_image_size = 32
    config.batch_size = 4
    config.eval.batch_size = 4
    config.optimizer.name = "adam"
    config.optimizer.weight_decay = 0.0
    return config


def tiny_mask_rcnn_config():
    """Mask R-CNN R18-FPN at the sizes of `jaxseg.testing.tiny_mask_rcnn`, 64 px, batch 2."""
    config = base_config()
    config.model.name = TINY_MASK_RCNN_NAME
    set_tiny_mask_rcnn(config.model)
    config.dataset.config = "instance"
    config.dataset.image_size = 64
    config.dataset.eval_image_size = 64
    config.dataset.max_instances = 4
    config.dataset.mask_size = 16
    config.batch_size = 2
    config.eval.batch_size = 2
    return config


# --- analytic FLOPs -------------------------------------------------------------------


def test_analytic_flops_of_one_conv_and_one_dense_layer_are_exact():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(8, (3, 3), padding="SAME")(x)  # [2, 16, 16, 8]
            return nn.Dense(5)(x.reshape(2, -1))  # [2, 5]

    x = jax.ShapeDtypeStruct((2, 16, 16, 4), jnp.float32)
    variables = jax.eval_shape(Net().init, jax.random.PRNGKey(0), x)
    count = analytic.count_flops(Net().apply, variables, x)
    assert count.conv == 2 * (2 * 16 * 16 * 8) * (3 * 3 * 4)
    assert count.dot == 2 * 2 * (16 * 16 * 8) * 5
    assert count.total == count.conv + count.dot
    # Each layer's input, weights and output once, float32: conv 2x16x16x4 in, 3x3x4x8
    # kernel, 2x16x16x8 out; dense 2x2048 in, 2048x5 kernel, 2x5 out.
    conv_bytes = 4 * (2 * 16 * 16 * 4 + 3 * 3 * 4 * 8 + 2 * 16 * 16 * 8)
    assert count.layer_bytes == conv_bytes + 4 * (2 * 2048 + 2048 * 5 + 2 * 5)
    # Compiled, XLA skips the taps that fall on the conv's zero padding (8% here) and adds
    # the bias adds: within 15% of the analytic count.
    compiled = jax.jit(Net().apply).lower(variables, x).compile()
    flops = compiled.cost_analysis()["flops"]
    assert 0.85 * count.total <= flops <= 1.1 * count.total


def test_analytic_flops_of_strided_grouped_and_transposed_convs():
    x = jnp.zeros((1, 8, 8, 6))
    strided = analytic.count_flops(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        x,
        jnp.zeros((2, 2, 6, 4)),
    )
    assert strided.conv == 2 * (1 * 4 * 4 * 4) * (2 * 2 * 6)
    grouped = analytic.count_flops(
        lambda x, w: jax.lax.conv_general_dilated(
            x,
            w,
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=3,
        ),
        x,
        jnp.zeros((3, 3, 2, 6)),
    )
    assert grouped.conv == 2 * (1 * 8 * 8 * 6) * (3 * 3 * 2)
    # A transposed conv multiplies the real input pixels only, not the inserted zeros.
    transposed = analytic.count_flops(
        lambda x, w: jax.lax.conv_transpose(
            x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        x,
        jnp.zeros((4, 4, 6, 5)),
    )
    assert transposed.conv == 2 * (1 * 8 * 8) * (4 * 4) * 6 * 5


def test_analytic_flops_count_scan_bodies_per_step_and_while_bodies_once():
    w = jnp.zeros((16, 16))

    def scanned(x):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=7)[0]

    def looped(x):
        return jax.lax.while_loop(lambda c: c[0] < 7, lambda c: (c[0] + 1, c[1] @ w), (0, x))[1]

    x = jnp.zeros((4, 16))
    one = 2 * 4 * 16 * 16
    assert analytic.count_flops(scanned, x).dot == 7 * one
    assert analytic.count_flops(scanned, x).layer_bytes == 7 * 4 * (4 * 16 + 16 * 16 + 4 * 16)
    loop = analytic.count_flops(looped, x)
    assert (loop.dot, loop.while_loops) == (one, 1)


# --- the optimised HLO: loops and traffic ----------------------------------------------


def test_while_loop_bounds_from_the_compiled_program():
    w = jnp.eye(8)

    def fn(x, alive):
        x = jax.lax.fori_loop(0, 7, lambda i, x: jnp.tanh(x @ w), x)  # a fixed count

        def step(state):
            i, x = state
            return i + 1, x * 0.5

        # A data-dependent stop under a counter: at most 11 steps.
        _, x = jax.lax.while_loop(lambda s: (s[0] < 11) & (s[1].sum() > 1e-3), step, (0, x))

        def clear(mask):  # the greedy-NMS shape: run while anything is alive
            return mask.at[jnp.argmax(mask)].set(False)

        left = jax.vmap(lambda m: jax.lax.while_loop(jnp.any, clear, m))(alive)
        return x, left

    x = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    alive = jax.ShapeDtypeStruct((3, 13), jnp.bool_)
    text = jax.jit(fn).lower(x, alive).compile().as_text()
    loops = hlo_loops.while_loops(hlo.parse_module(text))
    bounds = sorted((loop.trip_count_bound, loop.source) for loop in loops)
    assert (7, "known_trip_count") in bounds or (7, "induction_variable") in bounds
    assert (11, "induction_variable") in bounds
    # The vmapped mask loop: 13 entries per row, the 3 rows side by side.
    assert (13, "mask (assumed)") in bounds
    assert all(loop.executions == 1 and loop.iterations == loop.trip_count_bound for loop in loops)


def test_nested_loops_multiply_and_traffic_adds_up():
    w = jnp.eye(16)

    def fn(x):
        def outer(i, x):
            return jax.lax.fori_loop(0, 3, lambda j, x: x @ w, x)

        return jax.lax.fori_loop(0, 5, outer, x)

    text = jax.jit(fn).lower(jax.ShapeDtypeStruct((16, 16), jnp.float32)).compile().as_text()
    module = hlo.parse_module(text)
    loops = hlo_loops.while_loops(module)
    assert len(loops) == 2, f"XLA unrolled the loops ({len(loops)} left): rewrite the example"
    inner = max(loops, key=lambda loop: loop.executions)
    assert (inner.trip_count_bound, inner.executions, inner.iterations) == (3, 5, 15)
    rows = hlo_traffic.traffic_by_op(module, loops)
    assert rows == sorted(rows, key=lambda r: -r["bytes"])
    assert all(r["bytes_all_iterations"] >= r["bytes"] > 0 for r in rows)
    dot = [r for r in rows if r["op"].endswith("dot_general")]
    # Inside both loops: the inner body runs 15 times per step.
    assert dot and dot[0]["bytes_all_iterations"] == pytest.approx(15 * dot[0]["bytes"])


def test_type_bytes_of_arrays_tuples_and_tpu_tiles():
    assert hlo.type_bytes("f32[8,128]{1,0}") == 8 * 128 * 4
    assert hlo.type_bytes("(bf16[2,3]{1,0}, s32[], pred[5]{0})") == 12 + 4 + 5
    # A TPU layout pads the two most minor dimensions to its 8 x 128 tile.
    assert hlo.type_bytes("f32[4,3]{1,0:T(8,128)}") == 8 * 128 * 4
    assert hlo.type_bytes("f32[2,16,3]{2,1,0:T(8,128)}") == 2 * 16 * 128 * 4
    assert hlo.type_bytes("s32[]{:T(128)}") == 128 * 4


def test_source_op_strips_wrappers_and_tells_the_pass():
    assert hlo_traffic.source_op(
        "jit(train_step)/transpose(jvp(MaskRCNN))/roi_heads/_pool/mul"
    ) == (
        "MaskRCNN/roi_heads/_pool/mul",
        "backward",
    )
    assert hlo_traffic.source_op("jit(train_step)/jvp(FCN)/backbone/vmap()/conv") == (
        "FCN/backbone/conv",
        "forward",
    )


# --- whole reports ----------------------------------------------------------------------


def _check_step(step, *, multiplier):
    memory, cost, per_image = step["memory_per_chip"], step["cost_per_chip"], step["per_image"]
    assert step["images_per_chip"] == step["global_batch"] // len(jax.devices())
    assert memory["total_bytes"] == (
        memory["argument_bytes"]
        + memory["output_bytes"]
        - memory["alias_bytes"]
        + memory["temp_bytes"]
        + memory["generated_code_bytes"]
    )
    assert memory["argument_bytes"] > 0 and memory["temp_bytes"] > 0
    assert per_image["flops"] == pytest.approx(cost["flops"] / step["images_per_chip"])
    assert per_image["hbm_bytes"] == pytest.approx(cost["bytes_accessed"] / step["images_per_chip"])
    assert step["analytic"]["multiplier"] == multiplier
    assert per_image["analytic_flops"] == pytest.approx(
        step["analytic"]["forward_flops_per_image"] * multiplier
    )
    assert per_image["analytic_flops"] == pytest.approx(
        step["analytic"]["conv_flops_per_image"] + step["analytic"]["dot_flops_per_image"]
    )
    # XLA adds elementwise work and skips the frozen layers' gradients: close to analytic.
    assert 0.5 < per_image["compiled_over_analytic"] < 2.0
    assert step["compile_seconds"]["compile"] > 0
    assert step["sequential_depth"] == sum(
        w["iterations"] for w in step["while_loops"] if w["iterations"] is not None
    )
    traffic = step["hbm_traffic"]
    shares = [row["share"] for row in traffic["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    # The parse of the HLO text accounts for XLA's own byte count, within a factor.
    ratio = traffic["parsed_bytes_per_chip"] / traffic["cost_analysis_bytes_per_chip"]
    assert 0.5 < ratio < 2.0
    assert step["roofline"]["available"] is False  # no chip facts for a CPU


@pytest.fixture(scope="module")
def fcn_report():
    return compile_report(tiny_fcn_config(), target.local_target())


def test_local_report_of_the_tiny_fcn(fcn_report):
    assert fcn_report["target"]["kind"] == "local"
    assert fcn_report["config"]["num_classes"] == len(shapes.CLASS_NAMES)  # background + shapes
    _check_step(fcn_report["steps"]["train"], multiplier=3)
    _check_step(fcn_report["steps"]["eval"], multiplier=1)
    train, evaluate = fcn_report["steps"]["train"], fcn_report["steps"]["eval"]
    # A train step does the forward and two backward passes at the same batch and size.
    assert train["analytic"]["forward_flops_per_image"] == pytest.approx(
        evaluate["analytic"]["forward_flops_per_image"], rel=0.01
    )
    assert train["sequential_depth"] == 0  # the FCN has no loop
    text = format_report(fcn_report)
    assert (
        "train step" in text and "eval step" in text and "counts a while loop's body once" in text
    )
    json.dumps(fcn_report)  # all plain values


def test_local_report_of_the_tiny_mask_rcnn_shows_the_greedy_nms_loop():
    report = compile_report(tiny_mask_rcnn_config(), target.local_target(), steps=("train",))
    step = report["steps"]["train"]
    _check_step(step, multiplier=3)
    nms = [w for w in step["while_loops"] if "rpn" in w["op"] and w["bound_from"] != "none"]
    assert nms, step["while_loops"]
    # The RPN's NMS loops over its proposals: at most one step per box of the largest batch.
    assert step["sequential_depth"] >= max(w["trip_count_bound"] for w in nms) > 1
    assert step["sequential_depth"] > 0


def test_cli_writes_the_json_report(tmp_path):
    output = tmp_path / "report.json"
    config = os.path.join(ROOT, "configs", "fcn8s_shapes.py")
    args = [
        sys.executable,
        "-m",
        "jaxseg.compile_report",
        f"--config={config}",
        "--config.model.width=0.03125",
        "--config.dataset.eval_image_size=32",
        "--config.eval.batch_size=2",
        "--steps=eval",
        "--local",
        f"--output={output}",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert list(report["steps"]) == ["eval"]
    assert report["steps"]["eval"]["global_batch"] == 2
    assert "eval step" in result.stdout
    # Neither or both targets: a usage error.
    both = subprocess.run(
        [*args[:-2], "--topology=v5e:2x2", "--local"], capture_output=True, text=True, env=env
    )
    assert both.returncode != 0 and "exactly one of" in both.stderr


def test_topology_without_libtpu_says_what_to_install(monkeypatch):
    monkeypatch.setattr(target, "_libtpu_installed", lambda: False)
    with pytest.raises(target.MissingLibtpuError) as error:
        target.topology_target("v5e:2x2")
    message = str(error.value)
    assert "libtpu" in message and "pip install" in message and "jaxseg[tpu]" in message
    assert target.libtpu_requirement() in message
    assert target.libtpu_requirement().startswith("libtpu==")  # jax's own tpu extra pins it


def test_unknown_topology_and_uneven_batches_are_refused():
    with pytest.raises(ValueError, match="v9z:2x2"):
        target.topology_target("v9z:2x2")
    config = tiny_fcn_config()
    config.batch_size = 3
    fake = target.Target("local", "cpu", jax.devices() * 2, None)
    with pytest.raises(ValueError, match="batch_size = 3"):
        compile_report(config, fake)


def test_a_dataset_with_class_names_in_its_files_needs_the_class_count(monkeypatch):
    config = tiny_mask_rcnn_config()
    config.dataset.name = "coco"  # class names read from the prepared builder
    config.dataset.config = ""
    with pytest.raises(ValueError, match="--num_classes=80"):
        make_report_task(config)
    config.model.num_classes = 80
    task = make_report_task(config)
    assert task.num_classes == 80 and task.model.num_classes == 80


def test_chip_facts_are_consistent():
    for name, chip in target.CHIPS.items():
        assert chip.name == name and chip.source.startswith("https://cloud.google.com/tpu/")
        assert 8 * 2**30 < chip.hbm_bytes < 128 * 2**30
        # Ridge points of TPUs: between 100 and 600 FLOPs per byte.
        assert 100 < chip.peak_bf16_flops / chip.hbm_bytes_per_second < 600
    assert target.chip_for_device_kind("TPU v5 lite") is target.CHIPS["v5e"]
    assert target.chip_for_device_kind("cpu") is None


@pytest.mark.skipif(not HAVE_LIBTPU, reason=NO_LIBTPU)
def test_tpu_report_of_the_tiny_fcn_on_a_v5e_slice():
    slice_ = target.topology_target("v5e:2x2")
    assert len(slice_.devices) == 4 and slice_.chip is target.CHIPS["v5e"]
    config = tiny_fcn_config()
    config.dtype = "bfloat16"
    report = compile_report(config, slice_, steps=("train",))
    step = report["steps"]["train"]
    assert report["target"]["platform"] == "tpu" and report["target"]["num_chips"] == 4
    assert step["images_per_chip"] == 1
    assert step["memory_per_chip"]["fits"] is True
    assert 0.5 < step["per_image"]["compiled_over_analytic"] < 3.0
    roof = step["roofline"]
    assert roof["available"] and roof["step_seconds"] == max(
        roof["compute_seconds"], roof["memory_seconds"]
    )
    assert roof["images_per_second_slice"] == pytest.approx(4 * roof["images_per_second_per_chip"])
    np.testing.assert_allclose(
        roof["memory_seconds"], step["cost_per_chip"]["bytes_accessed"] / 819e9, rtol=1e-9
    )
