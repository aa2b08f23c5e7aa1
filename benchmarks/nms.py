"""Greedy vs tiled NMS vs torchvision, on this machine's CPU, N = 1000 to 10000 boxes.

    python benchmarks/nms.py [--repeats 5] [--sizes 1000 2000 4000 10000]

(`--sizes` with no value: only the Mask R-CNN calls.)

Three workloads per N, on proposal-like boxes clustered around N / 13 centres of an
800x1088 image (as benchmarks/ops.py's):
- `nms`, IoU 0.5, every kept box asked for (max_output_size = N);
- `nms`, IoU 0.7, max_output_size 1000 (the RPN's post-NMS count at test);
- `batched_nms` over 5 groups (the RPN's FPN levels), IoU 0.7, max_output_size 2000 (the
  RPN's post-NMS count in training).

Then Mask R-CNN's own NMS calls at COCO sizes (1024x1024 canvas): the RPN's batched NMS
over its 5 levels (8,768 candidates for 2000 in training, 4,768 for 1000 at test) and the
detections' per-class NMS (1000 RoIs x 90 classes, 10% above the score threshold, for 100).

Prints median wall times (after a warm-up call; compile apart), the ratios, and the
sequential loop steps each jaxseg algorithm took: greedy, one step per kept box (batched:
one per box kept in the fullest group, until max_output_size boxes are final); tiled, its
outer steps over 512-box tiles and the sum of its inner fixed-point steps.
"""

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from jaxseg import ops
from jaxseg.ops.tiled_nms import TILE_SIZE, _tiled


def median_time(fn, repeats: int) -> float:
    """Returns the median seconds of `repeats` calls of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def proposal_boxes(rng, num, clusters, image_hw=(800, 1088)):
    """[num, 4] float32 boxes, log-uniform sizes 16-512 px, clustered around `clusters`."""
    height, width = image_hw
    centres = rng.uniform([0, 0], [width, height], size=(clusters, 2))
    centre = centres[rng.integers(0, clusters, size=num)] + rng.normal(scale=12, size=(num, 2))
    size = np.exp(rng.uniform(np.log(16), np.log(512), size=(num, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def greedy_batched_steps(scores, groups, kept, max_out):
    """Returns the loop steps of jaxseg's greedy batched NMS, from torchvision's kept boxes.

    Step k keeps the k-th kept box of every group; the best undecided box of a group is then
    its (k+1)-th kept one. The loop stops when no group has one left, or when `max_out`
    kept boxes outscore all of them.
    """
    per_group = [np.sort(scores[kept[groups[kept] == g]])[::-1] for g in np.unique(groups)]
    step = 0
    while True:
        step += 1
        following = [s[step] for s in per_group if len(s) > step]
        if not following:
            return step
        so_far = np.concatenate([s[:step] for s in per_group])
        if np.sum(so_far > max(following)) >= max_out:
            return step


def bench(rng, num, repeats, batched, max_out=None):
    boxes = proposal_boxes(rng, num, clusters=max(num // 13, 1))
    scores = rng.uniform(size=num).astype(np.float32)
    groups = rng.integers(0, 5, size=num).astype(np.int32)
    if batched:
        threshold, max_out = 0.7, min(2000, num)
    else:
        threshold, max_out = (0.5, num) if max_out is None else (0.7, min(max_out, num))
    b, s, g = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(groups)
    tb, ts, tg = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups)
    kwargs = dict(iou_threshold=threshold, max_output_size=max_out)
    if batched:
        greedy = jax.jit(lambda b, s, g: ops.batched_nms(b, s, g, **kwargs, method="greedy"))
        tiled = jax.jit(lambda b, s, g: ops.batched_nms(b, s, g, **kwargs, method="tiled"))
        args = (b, s, g)
        kept = torchvision.ops.batched_nms(tb, ts, tg, threshold).numpy()
        greedy_steps = greedy_batched_steps(scores, groups, kept, max_out)
        torch_fn = lambda: torchvision.ops.batched_nms(tb, ts, tg, threshold)  # noqa: E731
        name = f"batched_nms 5 groups, IoU 0.7, N {num}, max_out {max_out}"
        loops = jax.jit(
            lambda b, s, g: _tiled(b, s, g, jnp.ones(num, bool), threshold, max_out, TILE_SIZE)
        )
    else:
        greedy = jax.jit(lambda b, s: ops.nms(b, s, **kwargs, method="greedy"))
        tiled = jax.jit(lambda b, s: ops.nms(b, s, **kwargs, method="tiled"))
        args = (b, s)
        kept = torchvision.ops.nms(tb, ts, threshold).numpy()
        greedy_steps = min(len(kept), max_out)
        torch_fn = lambda: torchvision.ops.nms(tb, ts, threshold)  # noqa: E731
        name = f"nms IoU {threshold}, N {num}, " + (
            "all kept" if max_out == num else f"max_out {max_out}"
        )
        loops = jax.jit(
            lambda b, s: _tiled(b, s, None, jnp.ones(num, bool), threshold, max_out, TILE_SIZE)
        )
    # Same result, or the timing means nothing.
    for fn in (greedy, tiled):
        indices, valid = fn(*args)
        ours = np.asarray(indices)[np.asarray(valid)]
        np.testing.assert_array_equal(np.sort(ours), np.sort(kept[:max_out]))
    outer, inner = (int(x) for x in loops(*args)[2:])
    return dict(
        name=name,
        kept=len(kept[:max_out]),
        greedy=median_time(lambda: jax.block_until_ready(greedy(*args)), repeats),
        tiled=median_time(lambda: jax.block_until_ready(tiled(*args)), repeats),
        torch=median_time(torch_fn, repeats),
        greedy_steps=greedy_steps,
        outer=outer,
        inner=inner,
    )


def bench_mask_rcnn(rng, repeats, name, num, groups, max_out, threshold, valid_fraction):
    boxes = proposal_boxes(rng, num, clusters=max(num // 13, 1))
    scores = rng.uniform(size=num).astype(np.float32)
    classes = rng.integers(0, groups, size=num).astype(np.int32)
    valid = rng.uniform(size=num) < valid_fraction
    args = tuple(jnp.asarray(x) for x in (boxes, scores, classes, valid))
    kwargs = dict(iou_threshold=threshold, max_output_size=max_out)
    times = {}
    for method in ("greedy", "tiled", "auto"):
        fn = jax.jit(
            lambda b, s, c, v, method=method: ops.batched_nms(
                b, s, c, **kwargs, valid=v, method=method
            )
        )
        times[method] = median_time(lambda fn=fn: jax.block_until_ready(fn(*args)), repeats)
    subset = np.flatnonzero(valid)
    tb, ts, tc = (torch.from_numpy(x[subset]) for x in (boxes, scores, classes))
    times["torch"] = median_time(
        lambda: torchvision.ops.batched_nms(tb, ts, tc, threshold), repeats
    )
    return name, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 2000, 4000, 10000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), torchvision {torchvision.__version__}"
    )
    header = (
        f"{'workload':<56} {'kept':>5} {'greedy ms':>10} {'tiled ms':>9} {'torchvision ms':>15}"
        f" {'greedy/tv':>9} {'tiled/tv':>8} {'tiled/greedy':>12} {'greedy steps':>12}"
        f" {'tiled outer+inner':>17}"
    )
    print(header)
    for batched, max_out in ((False, None), (False, 1000), (True, None)):
        for num in args.sizes:
            r = bench(rng, num, args.repeats, batched, max_out)
            print(
                f"{r['name']:<56} {r['kept']:>5} {r['greedy'] * 1e3:>10.1f}"
                f" {r['tiled'] * 1e3:>9.1f} {r['torch'] * 1e3:>15.1f}"
                f" {r['greedy'] / r['torch']:>9.2f} {r['tiled'] / r['torch']:>8.2f}"
                f" {r['tiled'] / r['greedy']:>12.2f} {r['greedy_steps']:>12}"
                f" {r['outer']:>8}+{r['inner']:<8}"
            )
    print(
        f"{'Mask R-CNN call':<64} {'greedy ms':>10} {'tiled ms':>9} {'auto ms':>8}"
        f" {'torchvision ms':>15} {'tiled/greedy':>12}"
    )
    for case in (
        ("RPN, training: 8768 candidates, 5 levels, for 2000", 8768, 5, 2000, 0.7, 1.0),
        ("RPN, test: 4768 candidates, 5 levels, for 1000", 4768, 5, 1000, 0.7, 1.0),
        ("detections: 90000 candidates (10% valid), 90 classes, for 100", 90000, 90, 100, 0.5, 0.1),
    ):
        name, t = bench_mask_rcnn(rng, args.repeats, *case)
        print(
            f"{name:<64} {t['greedy'] * 1e3:>10.1f} {t['tiled'] * 1e3:>9.1f}"
            f" {t['auto'] * 1e3:>8.1f} {t['torch'] * 1e3:>15.1f} {t['tiled'] / t['greedy']:>12.2f}"
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
