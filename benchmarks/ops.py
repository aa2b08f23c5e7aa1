"""jaxseg.ops vs torchvision.ops on this machine, in one run: RoIAlign, NMS, batched NMS.

    python benchmarks/ops.py [--repeats 10]

Prints median wall times (after a warm-up call; jaxseg's compile time apart) and the
ratio jaxseg / torchvision: below 1.0 jaxseg is faster. Both sides get the same inputs.
"""

import argparse
import os
import platform
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from jaxseg import ops


def median_time(fn, repeats: int) -> float:
    """Returns the median seconds of `repeats` calls of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compile_time(fn, *args) -> float:
    """Returns the seconds to trace and compile `fn` for `args` (a fresh jit, no cache hit)."""
    jax.clear_caches()
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start


def proposal_boxes(rng, num, image_hw=(800, 1088), clusters=None):
    """[num, 4] float32 boxes with log-uniform sizes 16-512 px; optionally clustered."""
    height, width = image_hw
    if clusters:
        centres = rng.uniform([0, 0], [width, height], size=(clusters, 2))
        centre = centres[rng.integers(0, clusters, size=num)] + rng.normal(scale=12, size=(num, 2))
    else:
        centre = rng.uniform([0, 0], [width, height], size=(num, 2))
    size = np.exp(rng.uniform(np.log(16), np.log(512), size=(num, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def bench_roi_align(rng, repeats):
    height, width, channels, rois = 100, 136, 256, 1024
    features = rng.normal(size=(height, width, channels)).astype(np.float32)
    boxes = proposal_boxes(rng, rois)
    cotangent = rng.normal(size=(rois, 7, 7, channels)).astype(np.float32)
    kwargs = dict(spatial_scale=1 / 8, sampling_ratio=2, aligned=True)

    f, b, g = jnp.asarray(features), jnp.asarray(boxes), jnp.asarray(cotangent)

    def forward_fn(f, b):
        return ops.roi_align(f, b, 7, **kwargs)

    def forward_backward_fn(f, b, g):
        out, vjp = jax.vjp(lambda f: ops.roi_align(f, b, 7, **kwargs), f)
        return out, vjp(g)[0]

    forward, forward_backward = jax.jit(forward_fn), jax.jit(forward_backward_fn)

    tf = torch.from_numpy(features).permute(2, 0, 1)[None].contiguous()
    tb = [torch.from_numpy(boxes)]
    tg = torch.from_numpy(cotangent).permute(0, 3, 1, 2).contiguous()
    tf_grad = tf.clone().requires_grad_()

    def torch_forward():
        return torchvision.ops.roi_align(tf, tb, 7, 1 / 8, 2, True)

    def torch_forward_backward():
        out = torchvision.ops.roi_align(tf_grad, tb, 7, 1 / 8, 2, True)
        out.backward(tg)
        tf_grad.grad = None

    rows = [
        (
            "roi_align forward (100x136x256, 1024 RoIs, 7x7, sr 2)",
            median_time(lambda: forward(f, b).block_until_ready(), repeats),
            median_time(torch_forward, repeats),
            compile_time(forward_fn, f, b),
        ),
        (
            "roi_align forward + backward",
            median_time(lambda: jax.block_until_ready(forward_backward(f, b, g)), repeats),
            median_time(torch_forward_backward, max(3, repeats // 2)),
            compile_time(forward_backward_fn, f, b, g),
        ),
    ]
    return rows


def bench_nms(rng, repeats):
    num = 4000
    boxes = proposal_boxes(rng, num, clusters=300)
    scores = rng.uniform(size=num).astype(np.float32)
    classes = rng.integers(0, 80, size=num).astype(np.int32)
    b, s, c = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes)
    tb, ts, tc = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes)
    threshold = 0.5
    kept = len(torchvision.ops.nms(tb, ts, threshold))
    kept_batched = len(torchvision.ops.batched_nms(tb, ts, tc, threshold))

    rows = []
    for max_out in (num, 1000):
        raw = partial(ops.nms, iou_threshold=threshold, max_output_size=max_out)
        fn = jax.jit(raw)
        rows.append(
            (
                f"nms (4000 boxes, IoU 0.5, {kept} kept, max_output_size {max_out})",
                median_time(lambda fn=fn: jax.block_until_ready(fn(b, s)), repeats),
                median_time(lambda: torchvision.ops.nms(tb, ts, threshold), repeats),
                compile_time(raw, b, s),
            )
        )
    raw = partial(ops.batched_nms, iou_threshold=threshold, max_output_size=num)
    fn = jax.jit(raw)
    rows.append(
        (
            f"batched_nms (4000 boxes, 80 classes, {kept_batched} kept)",
            median_time(lambda: jax.block_until_ready(fn(b, s, c)), repeats),
            median_time(lambda: torchvision.ops.batched_nms(tb, ts, tc, threshold), repeats),
            compile_time(raw, b, s, c),
        )
    )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), torchvision {torchvision.__version__}"
    )
    rows = bench_roi_align(rng, args.repeats) + bench_nms(rng, args.repeats)
    print(f"{'op':<66} {'jaxseg ms':>10} {'torchvision ms':>15} {'ratio':>6} {'compile s':>10}")
    for name, ours, theirs, compiled in rows:
        times = f"{ours * 1e3:>10.1f} {theirs * 1e3:>15.1f} {ours / theirs:>6.2f}"
        print(f"{name:<66} {times} {compiled:>10.2f}")


if __name__ == "__main__":
    main()
