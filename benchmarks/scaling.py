"""Data-parallel step time and images/s over 1, 2, 4 devices; compile time, cold vs warm cache.

    # CPU, simulated devices (each run is a fresh process with
    # --xla_force_host_platform_device_count=N): the mechanism, not a speed-up, since all
    # the "devices" share the same cores.
    python benchmarks/scaling.py --models fcn8s,mask_rcnn --devices 1,2,4

    # An accelerator: the first N real devices; full-size models.
    python benchmarks/scaling.py --platform gpu --models mask_rcnn --width 1 --size 1024 \\
        --batch 8 --devices 1 --dtypes float32,bfloat16 --full-size

Every run trains the model through jaxseg's generic jitted step (`make_train_step` with
`step_shardings`: batch split over a `data` mesh, state replicated, or FSDP with
`--sharding fsdp`) on random data with a fixed global batch, so per-device batch =
batch / devices. Step time is the median of `--steps` steps after one warm-up step;
images/s = global batch / step time. Compile time is `jit(...).lower(...).compile()`
timed in a fresh process with an empty persistent cache (cold), then again in another
fresh process with the cache it filled (warm: a cache read instead of an XLA compile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = {"fcn8s": 21, "mask_rcnn": 80}


def _task(model_name, args):
    """Returns (task, global batch of random numpy data): a minimal Task for the step."""
    import jax.numpy as jnp
    import numpy as np

    from jaxseg.detection import Instances, total_loss
    from jaxseg.models import build_model, softmax_cross_entropy
    from jaxseg.tasks.base import Task

    dtype = jnp.dtype(args.dtype)
    rng = np.random.default_rng(0)
    size, batch = args.size, args.batch
    images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    if model_name == "fcn8s":
        model = build_model(
            "fcn8s", num_classes=NUM_CLASSES["fcn8s"], width=args.width, dtype=dtype
        )
        data = {
            "image": images,
            "label": rng.integers(0, NUM_CLASSES["fcn8s"], (batch, size, size)).astype(np.int32),
        }

        def loss(variables, batch, rng):
            logits = model.apply(variables, batch["image"], train=True, rngs={"dropout": rng})
            return softmax_cross_entropy(logits, batch["label"]), {}

    else:
        from jaxseg.testing import SMALL_MASK_RCNN

        # Counts that keep the CPU runs small; --full-size uses the model's defaults.
        settings = {} if args.full_size else SMALL_MASK_RCNN
        model = build_model(
            "mask_rcnn_resnet50_fpn",
            num_classes=NUM_CLASSES["mask_rcnn"],
            width=args.width,
            dtype=dtype,
            **settings,
        )
        n = 16
        x1y1 = rng.uniform(0, size * 0.7, (batch, n, 2))
        wh = rng.uniform(size * 0.05, size * 0.3, (batch, n, 2))
        data = {
            "image": images,
            "boxes": np.concatenate([x1y1, x1y1 + wh], -1).astype(np.float32),
            "classes": rng.integers(1, NUM_CLASSES["mask_rcnn"] + 1, (batch, n)).astype(np.int32),
            "masks": rng.integers(0, 2, (batch, n, 28, 28)).astype(np.uint8),
            "valid": np.ones((batch, n), bool),
        }

        def loss(variables, batch, rng):
            gt = Instances(
                boxes=batch["boxes"],
                classes=batch["classes"],
                masks=batch["masks"],
                valid=batch["valid"],
            )
            _, losses = model.apply(
                variables, batch["image"], gt, train=True, rngs={"sampling": rng}
            )
            return total_loss(losses), losses

    class BenchmarkTask(Task):
        train_keys = tuple(data)

        def __init__(self):
            pass

        def init_variables(self, rng, batch):
            return dict(model.init({"params": rng}, batch["image"][:1], train=False))

        def loss_fn(self, params, model_state, batch, rng):
            value, metrics = loss({"params": params, **model_state}, batch, rng)
            return value, (metrics, model_state)

        def check(self):
            raise NotImplementedError

        input_spec = make_loader = eval_step = eval_metrics = check
        predict = write_pictures = format_metrics = check

    return BenchmarkTask(), data


def child(args):
    """One run in this process: prints a JSON line of timings."""
    import functools

    import jax
    import numpy as np
    import optax

    from jaxseg.runtime import sharding
    from jaxseg.runtime.compilation import setup_compilation_cache
    from jaxseg.train.loop import create_train_state
    from jaxseg.train.step import make_train_step

    if args.cache_dir:
        setup_compilation_cache(args.cache_dir)
    task, data = _task(args.models, args)
    devices = jax.devices()[: args.devices]
    if len(devices) < args.devices:
        raise SystemExit(f"asked for {args.devices} devices, {jax.device_count()} present")
    mesh = sharding.make_mesh(devices)
    optimizer = optax.sgd(1e-3, momentum=0.9)
    schedule = optax.constant_schedule(1e-3)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in data.items()}
    create = functools.partial(create_train_state, task, optimizer, 0)
    shardings = sharding.step_shardings(jax.eval_shape(create, spec), mesh, mode=args.sharding)
    state = jax.jit(create, out_shardings=shardings.state)(data)
    batch = sharding.shard_batch(data, mesh, task.train_keys)
    step = make_train_step(task, optimizer, schedule, shardings=shardings)

    start = time.perf_counter()
    lowered = step.lower(state, batch)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start

    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {
        "model": args.models,
        "devices": len(devices),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "dtype": args.dtype,
        "sharding": args.sharding,
        "batch": args.batch,
        "size": args.size,
        "width": args.width,
        "step_s": step_s,
        "images_per_s": args.batch / step_s,
        "trace_s": trace_s,
        "compile_s": compile_s,
        "loss": float(np.asarray(metrics["loss"])),
    }
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(args, model, devices, dtype, cache_dir):
    env = dict(os.environ, PYTHONPATH=ROOT)
    if args.platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--models", model]
    argv += ["--devices", str(devices), "--dtype", dtype, "--cache-dir", cache_dir]
    for key in ("batch", "size", "width", "steps", "sharding"):
        argv += [f"--{key}", str(getattr(args, key))]
    if args.full_size:
        argv.append("--full-size")
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="fcn8s,mask_rcnn")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--platform", default="cpu", help="cpu: simulated devices")
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sharding", default="replicated", choices=("replicated", "fsdp"))
    parser.add_argument("--full-size", action="store_true", help="Mask R-CNN default counts")
    parser.add_argument("--no-cache-runs", action="store_true", help="skip cold/warm compile")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.devices = int(args.devices)
        return child(args)

    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, platform {args.platform}, global batch {args.batch}, "
        f"{args.size}px, width {args.width:g}, sharding {args.sharding}"
    )
    header = "| model | dtype | devices | per-device batch | step ms | images/s | compile s |"
    print(header + "\n|---|---|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            for devices in map(int, args.devices.split(",")):
                with tempfile.TemporaryDirectory() as cache:
                    r = _spawn(args, model, devices, dtype, cache)
                print(
                    f"| {model} | {dtype} | {devices} | {args.batch // devices} | "
                    f"{1000 * r['step_s']:.1f} | {r['images_per_s']:.1f} | "
                    f"{r['compile_s']:.2f} |",
                    flush=True,
                )
    if args.no_cache_runs:
        return
    print("\n| model | dtype | devices | trace s | compile s, cold cache | compile s, warm cache |")
    print("|---|---|---:|---:|---:|---:|")
    devices = max(map(int, args.devices.split(",")))
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            with tempfile.TemporaryDirectory() as cache:
                cold = _spawn(args, model, devices, dtype, cache)
                warm = _spawn(args, model, devices, dtype, cache)
            print(
                f"| {model} | {dtype} | {devices} | {cold['trace_s']:.2f} | "
                f"{cold['compile_s']:.2f} | {warm['compile_s']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
