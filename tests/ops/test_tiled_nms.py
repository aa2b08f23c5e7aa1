"""Tiled NMS: exactly torchvision's kept boxes, in order, for any tile size; its loop depth."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops.boxes import _batched_nms_vanilla

from jaxseg import ops
from jaxseg.ops.tiled_nms import _tiled, tiled_nms_depth


def clustered_boxes(rng, num, clusters=20, extent=200.0):
    """[num, 4] boxes jittered around a few centres, so that many overlap (as test_nms.py)."""
    centres = rng.uniform(0, extent, size=(clusters, 2))
    pick = centres[rng.integers(0, clusters, size=num)]
    xy = pick + rng.normal(scale=6.0, size=(num, 2))
    wh = rng.uniform(5, 40, size=(num, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[::17, 2:] = boxes[::17, :2]  # some empty boxes
    return boxes


def kept(indices, valid):
    return np.asarray(indices)[np.asarray(valid)]


def _random_case(seed):
    """Returns boxes [N, 4], scores [N], valid [N], threshold, tile size, max_output_size."""
    rng = np.random.default_rng(seed)
    num = int(rng.integers(1, 900))
    boxes = clustered_boxes(rng, num, clusters=int(rng.integers(1, 40)), extent=300.0)
    if seed % 3 == 0:  # many tied scores
        scores = rng.integers(0, 6, size=num).astype(np.float32)
    else:
        scores = rng.uniform(size=num).astype(np.float32)
    valid = rng.uniform(size=num) < rng.uniform(0.5, 1.0)
    # Thresholds from everywhere in (0, 1], some of them the ones torchvision users pass.
    threshold = float(rng.choice([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, rng.uniform(0.05, 1.0)]))
    tile = int(rng.choice([1, 3, 16, 64, 100, 512]))
    max_output = int(rng.integers(1, num + 10))
    return boxes, scores, valid, threshold, tile, max_output


@pytest.mark.parametrize("seed", range(16))
def test_random_sets_match_torchvision(seed):
    boxes, scores, valid, threshold, tile, max_output = _random_case(seed)
    subset = np.flatnonzero(valid)
    ref = torchvision.ops.nms(
        torch.from_numpy(boxes[subset]), torch.from_numpy(scores[subset]), threshold
    ).numpy()
    ref = subset[ref][:max_output]
    out = ops.tiled_nms(
        boxes,
        scores,
        iou_threshold=threshold,
        max_output_size=max_output,
        valid=valid,
        tile_size=tile,
    )
    np.testing.assert_array_equal(kept(*out), ref)
    assert out[0].shape == out[1].shape == (max_output,)
    assert out[0].dtype == jnp.int32 and out[1].dtype == jnp.bool_


@pytest.mark.parametrize("seed", range(6))
def test_random_sets_batched_match_torchvision(seed):
    boxes, scores, valid, threshold, tile, max_output = _random_case(100 + seed)
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, int(rng.integers(1, 12)), size=len(boxes))
    out = ops.tiled_batched_nms(
        boxes,
        scores,
        classes,
        iou_threshold=threshold,
        max_output_size=max_output,
        valid=valid,
        tile_size=tile,
    )
    greedy = ops.batched_nms(
        boxes,
        scores,
        classes,
        iou_threshold=threshold,
        max_output_size=max_output,
        valid=valid,
        method="greedy",
    )
    np.testing.assert_array_equal(kept(*out), kept(*greedy))
    # torchvision's own merge of the classes sorts unstably: compare sets of the whole output.
    subset = np.flatnonzero(valid)
    ref = _batched_nms_vanilla(
        torch.from_numpy(boxes[subset]),
        torch.from_numpy(scores[subset]),
        torch.from_numpy(classes[subset]),
        threshold,
    ).numpy()
    full = ops.tiled_batched_nms(
        boxes,
        scores,
        classes,
        iou_threshold=threshold,
        max_output_size=len(boxes),
        valid=valid,
        tile_size=tile,
    )
    np.testing.assert_array_equal(np.sort(kept(*full)), np.sort(subset[ref]))
    np.testing.assert_array_equal(scores[kept(*full)], scores[subset[ref]])


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_a_chain_of_suppressions_inside_a_tile(threshold):
    """A row of boxes, each overlapping the next: keep, drop, keep, drop, ...

    Box k's fate depends on box k - 1's, so a single pass over the tile (or a fixed number
    of passes) keeps the wrong boxes; the fixed point needs about one step per box.
    """
    # Width 10, shift s: IoU(k, k+1) = (10 - s) / (10 + s) > t > IoU(k, k+2).
    shift = 10 * (1 - threshold) / (1 + threshold) * 0.9
    assert (10 - 2 * shift) / (10 + 2 * shift) < threshold
    x = np.arange(64, dtype=np.float32) * np.float32(shift)
    boxes = np.stack([x, np.zeros_like(x), x + 10, np.full_like(x, 10)], 1)
    scores = np.linspace(1, 0.5, 64, dtype=np.float32)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    np.testing.assert_array_equal(ref.numpy(), np.arange(0, 64, 2))
    valid = jnp.ones(64, bool)
    indices, out_valid, outer, inner = _tiled(
        jnp.asarray(boxes), jnp.asarray(scores), None, valid, threshold, 64, 64
    )
    np.testing.assert_array_equal(kept(indices, out_valid), ref.numpy())
    assert int(outer) == 1 and 32 <= int(inner) <= 64  # the chain resolves one step at a time
    # Split into tiles, each tile continues the chain where the last one left it.
    out = ops.tiled_nms(boxes, scores, iou_threshold=threshold, max_output_size=64, tile_size=10)
    np.testing.assert_array_equal(kept(*out), ref.numpy())


def test_outer_steps_stop_early():
    rng = np.random.default_rng(3)
    boxes = clustered_boxes(rng, 1000)
    scores = rng.uniform(size=1000).astype(np.float32)
    valid = np.zeros(1000, bool)
    valid[rng.choice(1000, 150, replace=False)] = True

    def steps(max_output, valid):
        out = _tiled(
            jnp.asarray(boxes), jnp.asarray(scores), None, jnp.asarray(valid), 0.5, max_output, 64
        )
        return int(out[2])

    all_valid = np.ones(1000, bool)
    assert steps(1000, all_valid) == math.ceil(1000 / 64)
    assert steps(1000, valid) == math.ceil(150 / 64)  # the valid boxes are sorted first
    assert steps(5, all_valid) == 1  # the first tile already keeps 5


def test_depth_bounds():
    assert tiled_nms_depth(2000) == (4, 512)
    assert tiled_nms_depth(10000) == (20, 512)
    assert tiled_nms_depth(8768) == (18, 512)  # RPN candidates at 1024 px in training
    assert tiled_nms_depth(100) == (1, 100)
    assert tiled_nms_depth(1000, tile_size=256) == (4, 256)


def test_under_vmap_and_jit_with_padding():
    rng = np.random.default_rng(9)
    num, images = 333, 3  # not a multiple of the tile
    boxes = np.stack([clustered_boxes(rng, num) for _ in range(images)])
    scores = rng.uniform(size=(images, num)).astype(np.float32)
    classes = rng.integers(0, 4, size=(images, num))
    valid = rng.uniform(size=(images, num)) < np.array([[0.2], [0.7], [1.0]])

    @jax.jit
    @jax.vmap
    def fn(b, s, c, v):
        single = ops.tiled_nms(b, s, iou_threshold=0.6, max_output_size=120, valid=v, tile_size=64)
        per_class = ops.tiled_batched_nms(
            b, s, c, iou_threshold=0.6, max_output_size=120, valid=v, tile_size=64
        )
        return single, per_class

    single, per_class = fn(boxes, scores, classes, valid)
    for i in range(images):
        subset = np.flatnonzero(valid[i])
        tb, ts = torch.from_numpy(boxes[i][subset]), torch.from_numpy(scores[i][subset])
        ref = subset[torchvision.ops.nms(tb, ts, 0.6).numpy()][:120]
        np.testing.assert_array_equal(kept(single[0][i], single[1][i]), ref)
        greedy = ops.batched_nms(
            boxes[i],
            scores[i],
            classes[i],
            iou_threshold=0.6,
            max_output_size=120,
            valid=valid[i],
            method="greedy",
        )
        np.testing.assert_array_equal(kept(per_class[0][i], per_class[1][i]), kept(*greedy))


@pytest.mark.parametrize("tile_size", [0, -3, 2.0])
def test_bad_tile_size(tile_size):
    with pytest.raises(ValueError, match="tile_size must be an int >= 1"):
        ops.tiled_nms(
            np.zeros((2, 4)), np.zeros(2), iou_threshold=0.5, max_output_size=2, tile_size=tile_size
        )


@pytest.mark.parametrize("seed", range(8))
def test_segmented_nms_equals_batched_nms_with_the_segments_as_classes(seed):
    # The RPN's per-level NMS: tiled, the segments run side by side and are merged by score;
    # the output (kept indices, order and padding) must be batched_nms's exactly.
    boxes, scores, valid, threshold, _, max_output = _random_case(200 + seed)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(boxes)), size=min(4, len(boxes) - 1), replace=False))
    sizes = np.diff([0, *cuts, len(boxes)]).tolist()
    segments = np.repeat(np.arange(len(sizes)), sizes)
    want = ops.batched_nms(
        boxes,
        scores,
        segments,
        iou_threshold=threshold,
        max_output_size=max_output,
        valid=valid,
        method="greedy",
    )
    for method in ("tiled", "greedy", "auto"):
        got = ops.segmented_nms(
            boxes,
            scores,
            sizes,
            iou_threshold=threshold,
            max_output_size=max_output,
            valid=valid,
            method=method,
        )
        np.testing.assert_array_equal(got[1], want[1], err_msg=method)
        np.testing.assert_array_equal(got[0], want[0], err_msg=method)


def test_segmented_nms_checks_the_segment_sizes():
    boxes = np.tile(np.asarray([[0.0, 0.0, 4.0, 4.0]], np.float32), (5, 1))
    scores = np.ones(5, np.float32)
    for sizes in ([2, 2], [5, 0], [2, 4]):
        with pytest.raises(ValueError, match="segment_sizes"):
            ops.segmented_nms(boxes, scores, sizes, iou_threshold=0.5, max_output_size=3)
