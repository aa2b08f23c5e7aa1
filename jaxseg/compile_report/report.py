"""`compile_report(config, target)`: compile train.py's steps for a target and read the result.

The steps are built exactly as `jaxseg.train.train_and_evaluate` builds them (the task,
optimiser, schedule, abstract train state, `step_shardings`, `make_train_step` and
`make_eval_step`), on a mesh over the target's devices, and lowered with
`jax.ShapeDtypeStruct`s: no data is read, no parameter is initialised, nothing runs.
"""

from __future__ import annotations

import os
import time
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections

from jaxseg import data
from jaxseg.compile_report import analytic, hlo, loops, traffic
from jaxseg.compile_report.target import Target
from jaxseg.config import check_config
from jaxseg.data import catalog
from jaxseg.runtime import sharding
from jaxseg.tasks import make_task
from jaxseg.train import make_optimizer, make_schedule, prepare
from jaxseg.train.loop import abstract_train_state
from jaxseg.train.step import make_eval_step, make_train_step

__all__ = ["LOOP_NOTE", "STEPS", "compile_report", "eval_input_spec", "make_report_task"]

STEPS = ("train", "eval")
LOOP_NOTE = (
    "XLA's cost model (cost_analysis: FLOPs, bytes) counts a while loop's body once, "
    "whatever its trip count; sequential_depth bounds how many loop iterations one step runs."
)
TRAINING_MULTIPLIER = 3  # forward + input gradients + weight gradients


class _NeedsData(Exception):
    pass


def _needs_data(*args, **kwargs):
    raise _NeedsData


def make_report_task(config: ml_collections.ConfigDict):
    """Returns `prepare(config)`'s task, reading no dataset.

    A dataset whose class names come from its prepared files (COCO-format ones) would be
    built or opened to learn them; here `config.model.num_classes` stands in for them. A
    check of `prepare` that opens the dataset (its splits) is skipped.

    Raises:
      ValueError: such a dataset without `config.model.num_classes`, or any check of
        `prepare` (config keys and values, model settings).
    """
    real_info = data.dataset_info

    def info(name, task=None, **kwargs):
        try:
            with mock.patch.object(catalog, "load_builder", _needs_data):
                return real_info(name, task, **kwargs)
        except _NeedsData:
            pass
        num_classes = config.model.get("num_classes")
        if not num_classes:
            raise ValueError(
                f"dataset {name!r} takes its class names from its prepared files, and the "
                "compile report reads no data: give the class count, e.g. --num_classes=80 "
                "for COCO (config.model.num_classes)"
            ) from None
        names = tuple(f"class_{i}" for i in range(int(num_classes)))
        classes = catalog.ClassInfo(task or catalog.INSTANCE, names)
        return catalog.DatasetInfo(
            name=name,
            task=task or catalog.INSTANCE,
            semantic=classes if task == catalog.SEMANTIC else None,
            instance=classes if task != catalog.SEMANTIC else None,
        )

    with mock.patch.object(data, "dataset_info", info):
        try:
            with mock.patch.object(catalog, "load_builder", _needs_data):
                return prepare(config)
        except _NeedsData:
            # A check that opens the dataset (its splits): the report compiles without it.
            task = make_task(config)
            check_config(config, min_image_size=task.min_image_size)
            return task


def eval_input_spec(task, config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
    """Returns the shapes and dtypes of an evaluation batch's `task.eval_keys`.

    As the evaluation loaders give them (`jaxseg.data.make_semantic_loader` /
    `make_instance_loader`) at `config.eval.batch_size` on the `eval_image_size` canvas.
    """
    batch, size = int(config.eval.batch_size), int(config.dataset.eval_image_size)
    index = jax.dtypes.canonicalize_dtype(jnp.int64)  # int32 unless jax_enable_x64
    known = {
        "image": ((batch, size, size, 3), jnp.float32),
        "label": ((batch, size, size), jnp.int32),
        "valid": ((batch,), jnp.bool_),
        "image_valid": ((batch,), jnp.bool_),
        "image_id": ((batch,), index),
        "scale": ((batch,), jnp.float32),
        "original_size": ((batch, 2), jnp.int32),
    }
    missing = [k for k in task.eval_keys if k not in known]
    if missing:
        raise ValueError(f"no evaluation shape known for batch keys {missing}")
    return {k: jax.ShapeDtypeStruct(*known[k]) for k in task.eval_keys}


def _check_batch(value: int, devices: int, key: str) -> None:
    if value < 1 or value % devices:
        raise ValueError(
            f"config.{key} = {value} must be a positive multiple of the target's {devices} "
            f"devices (the global batch is split evenly); try {max(1, value // devices) * devices}"
        )


def _cost(compiled) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    cost = cost or {}
    return {
        "flops": float(cost.get("flops", 0.0)),
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "transcendentals": float(cost.get("transcendentals", 0.0)),
    }


def _memory(compiled, target: Target) -> dict[str, Any]:
    stats = compiled.memory_analysis()
    if stats is None:
        return {"available": False}
    per_chip = target.devices_per_chip
    fields = {
        "argument_bytes": stats.argument_size_in_bytes,
        "output_bytes": stats.output_size_in_bytes,
        "alias_bytes": stats.alias_size_in_bytes,
        "temp_bytes": stats.temp_size_in_bytes,
        "generated_code_bytes": stats.generated_code_size_in_bytes,
    }
    memory = {k: int(v) * per_chip for k, v in fields.items()}
    # Donated arguments come back as outputs in the same buffers (alias): count them once.
    memory["total_bytes"] = (
        memory["argument_bytes"]
        + memory["output_bytes"]
        - memory["alias_bytes"]
        + memory["temp_bytes"]
        + memory["generated_code_bytes"]
    )
    memory["available"] = True
    if target.chip is not None:
        memory["hbm_bytes"] = target.chip.hbm_bytes
        memory["fits"] = memory["total_bytes"] <= target.chip.hbm_bytes
    else:
        memory["hbm_bytes"], memory["fits"] = None, None
    return memory


def _roofline(flops: float, hbm_bytes: float, images: int, target: Target) -> dict[str, Any]:
    """Returns the step-time lower bound max(FLOPs / peak, bytes / bandwidth) of one chip."""
    chip = target.chip
    if chip is None:
        return {"available": False, "reason": f"no chip facts for {target.devices[0].device_kind}"}
    compute = flops / chip.peak_bf16_flops
    memory = hbm_bytes / chip.hbm_bytes_per_second
    seconds = max(compute, memory)
    chips = len(target.devices) // target.devices_per_chip
    return {
        "available": True,
        "compute_seconds": compute,
        "memory_seconds": memory,
        "step_seconds": seconds,
        "bound": "memory" if memory >= compute else "compute",
        "flops_per_byte": flops / hbm_bytes if hbm_bytes else None,
        "ridge_flops_per_byte": chip.peak_bf16_flops / chip.hbm_bytes_per_second,
        "images_per_second_per_chip": images / seconds if seconds else None,
        "images_per_second_slice": images * chips / seconds if seconds else None,
        "note": "loop bodies counted once (see sequential_depth); bf16 peak",
    }


def _analyse(
    name: str,
    jitted,
    args: tuple,
    forward,
    forward_args: tuple,
    multiplier: int,
    global_batch: int,
    target: Target,
    top: int,
    hlo_dir: str | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()

    devices = len(target.devices)
    per_chip = target.devices_per_chip
    images_per_chip = global_batch // devices * per_chip
    cost = {k: v * per_chip for k, v in _cost(compiled).items()}
    counted = analytic.count_flops(forward, *forward_args)
    forward_per_image = counted.total / global_batch
    analytic_per_image = forward_per_image * multiplier
    flops_per_image = cost["flops"] / images_per_chip
    bytes_per_image = cost["bytes_accessed"] / images_per_chip
    layer_bytes_per_image = counted.layer_bytes / global_batch * multiplier

    text = compiled.as_text()
    if hlo_dir:
        os.makedirs(hlo_dir, exist_ok=True)
        with open(os.path.join(hlo_dir, f"{name}_step.hlo.txt"), "w") as f:
            f.write(text)
    module = hlo.parse_module(text)
    found = loops.while_loops(module)
    rows = traffic.traffic_by_op(module, found)
    parsed_bytes = sum(r["bytes"] for r in rows) * per_chip
    for row in rows:
        row["bytes"] *= per_chip
        row["bytes_all_iterations"] *= per_chip
        row["share"] = row["bytes"] / parsed_bytes if parsed_bytes else 0.0
    bounded = [loop for loop in found if loop.iterations is not None]
    return {
        "step": name,
        "global_batch": global_batch,
        "images_per_chip": images_per_chip,
        "compile_seconds": {"lower": lowered_at - start, "compile": done - lowered_at},
        "memory_per_chip": _memory(compiled, target),
        "cost_per_chip": cost,
        "per_image": {
            "flops": flops_per_image,
            "hbm_bytes": bytes_per_image,
            "analytic_flops": analytic_per_image,
            "compiled_over_analytic": (
                flops_per_image / analytic_per_image if analytic_per_image else None
            ),
            "analytic_layer_bytes": layer_bytes_per_image,
            "bytes_over_layer_bytes": (
                bytes_per_image / layer_bytes_per_image if layer_bytes_per_image else None
            ),
        },
        "analytic": {
            "method": (
                "2 x multiply-adds of every conv_general_dilated and dot_general in the jaxpr "
                f"of the step's forward pass, x{multiplier}"
                + (" (forward + both gradients)" if multiplier > 1 else "")
            ),
            "forward_flops_per_image": forward_per_image,
            "conv_flops_per_image": counted.conv / global_batch * multiplier,
            "dot_flops_per_image": counted.dot / global_batch * multiplier,
            "multiplier": multiplier,
            "while_loops_in_forward": counted.while_loops,
            "layer_bytes_method": (
                "input, weight and output bytes of each of those convs and dots, read and "
                f"written once, x{multiplier}: the traffic of the layers run one by one with "
                "every activation making one round trip to memory"
            ),
        },
        "roofline": _roofline(cost["flops"], cost["bytes_accessed"], images_per_chip, target),
        "while_loops": [
            {
                "name": loop.name,
                "op": traffic.source_op(loop.op_name)[0],
                "trip_count_bound": loop.trip_count_bound,
                "bound_from": loop.source,
                "executions": loop.executions,
                "iterations": loop.iterations,
            }
            for loop in found
        ],
        "sequential_depth": sum(loop.iterations for loop in bounded),
        "loops_without_bound": len(found) - len(bounded),
        "loop_note": LOOP_NOTE,
        "hbm_traffic": {
            "parsed_bytes_per_chip": parsed_bytes,
            "cost_analysis_bytes_per_chip": cost["bytes_accessed"],
            "method": (
                "operand + output bytes of each instruction outside fusions of the optimised "
                "HLO, grouped by its op_name metadata (wrappers such as jvp/transpose/vmap "
                "removed; 'backward' where the op is under transpose); loop bodies once, and "
                "bytes_all_iterations with their trip-count bounds"
            ),
            "top": rows[:top],
        },
    }


def compile_report(
    config: ml_collections.ConfigDict,
    target: Target,
    *,
    steps: tuple[str, ...] = STEPS,
    top: int = 15,
    hlo_dir: str | None = None,
) -> dict[str, Any]:
    """Returns the report of `config`'s train and eval steps compiled for `target` (a dict).

    Args:
      config: a training config, as train.py reads it.
      target: `jaxseg.compile_report.topology_target(...)` or `local_target()`.
      steps: which steps to compile, of ('train', 'eval').
      top: how many source ops of HBM traffic to keep, most first.
      hlo_dir: where to write each step's optimised HLO text (`train_step.hlo.txt`), if given.

    Raises:
      ValueError: a bad config (the checks of `prepare`), a batch that does not split over
        the target's devices, an unknown step.
    """
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; choose from {STEPS}")
    task = make_report_task(config)
    devices = len(target.devices)
    _check_batch(int(config.batch_size), devices, "batch_size")
    if "eval" in steps:
        _check_batch(int(config.eval.batch_size), devices, "eval.batch_size")
    mesh = sharding.make_mesh(target.devices)
    num_steps = int(config.num_train_steps)
    optimizer = make_optimizer(config.optimizer, num_steps, task.trainable)
    schedule = make_schedule(config.optimizer, num_steps)
    abstract_state = abstract_train_state(task, optimizer, config, mesh)
    shardings = sharding.step_shardings(abstract_state, mesh, mode=config.sharding.params)
    train_batch = task.input_spec(int(config.batch_size))

    report: dict[str, Any] = {
        "config": {
            "model": config.model.name,
            "dtype": config.dtype,
            "image_size": int(config.dataset.image_size),
            "eval_image_size": int(config.dataset.eval_image_size),
            "batch_size": int(config.batch_size),
            "eval_batch_size": int(config.eval.batch_size),
            "sharding": config.sharding.params,
            "num_classes": int(task.num_classes),
        },
        "target": target.as_dict(),
        "jax": {"version": jax.__version__, "backend": target.devices[0].platform},
        "steps": {},
        "notes": [
            LOOP_NOTE,
            "cost_analysis' optimal_seconds is not used (it comes back negative on TPU).",
        ],
    }
    if target.devices_per_chip > 1:
        report["notes"].append(
            f"{target.name}: the compile-only topology has {target.devices_per_chip} devices "
            "(TensorCores) per chip; per-chip figures are per-device ones times that."
        )
    if "train" in steps:
        train_step = make_train_step(task, optimizer, schedule, shardings=shardings)

        def forward(state, batch):
            return task.loss_fn(state.params, state.model_state, batch, state.rng)[0]

        report["steps"]["train"] = _analyse(
            "train",
            train_step,
            (abstract_state, train_batch),
            forward,
            (abstract_state, train_batch),
            TRAINING_MULTIPLIER,
            int(config.batch_size),
            target,
            top,
            hlo_dir,
        )
    if "eval" in steps:
        eval_step = make_eval_step(task, shardings=shardings)
        eval_batch = eval_input_spec(task, config)
        variables = abstract_state.variables
        report["steps"]["eval"] = _analyse(
            "eval",
            eval_step,
            (variables, eval_batch),
            task.eval_step,
            (variables, eval_batch),
            1,
            int(config.eval.batch_size),
            target,
            top,
            hlo_dir,
        )
    return report
