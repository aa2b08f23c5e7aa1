"""NMS and batched NMS: the same kept boxes, in the same order, as torchvision.

Every test runs both algorithms ('greedy' and 'tiled'); tests/ops/test_tiled_nms.py adds the
tiled one's own cases (tile sizes, chains of suppressions, depth).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops.boxes import _batched_nms_vanilla

from jaxseg import ops

METHODS = ["greedy", "tiled"]


def clustered_boxes(rng, num, clusters=20, extent=200.0):
    """[num, 4] boxes jittered around a few centres, so that many overlap."""
    centres = rng.uniform(0, extent, size=(clusters, 2))
    pick = centres[rng.integers(0, clusters, size=num)]
    xy = pick + rng.normal(scale=6.0, size=(num, 2))
    wh = rng.uniform(5, 40, size=(num, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[::17, 2:] = boxes[::17, :2]  # some empty boxes
    return boxes


def kept(indices, valid):
    return np.asarray(indices)[np.asarray(valid)]


@pytest.mark.parametrize("method", METHODS)
def test_hand_computed(method):
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(3, 0) = 0.9, IoU(3, 1) = 72 / 118 = 0.61, IoU(0, 1) = 81 / 119 = 0.68.
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=4, method=method)), [3, 2]
    )
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.65, max_output_size=4, method=method)),
        [3, 1, 2],
    )
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.95, max_output_size=4, method=method)),
        [3, 0, 1, 2],
    )
    indices, valid = ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=6, method=method)
    np.testing.assert_array_equal(valid, [True, True, False, False, False, False])
    np.testing.assert_array_equal(indices[2:], 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("iou_threshold", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0])
def test_matches_torchvision_at_every_threshold(iou_threshold, method):
    rng = np.random.default_rng(int(iou_threshold * 100))
    boxes = clustered_boxes(rng, 500)
    scores = rng.uniform(size=500).astype(np.float32)
    ref = torchvision.ops.nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold
    ).numpy()
    fn = jax.jit(
        lambda b, s: ops.nms(b, s, iou_threshold=iou_threshold, max_output_size=500, method=method)
    )
    np.testing.assert_array_equal(kept(*fn(boxes, scores)), ref)
    # Truncation keeps the first max_output_size of the same sequence.
    short = ops.nms(boxes, scores, iou_threshold=iou_threshold, max_output_size=7, method=method)
    np.testing.assert_array_equal(kept(*short), ref[:7])


@pytest.mark.parametrize("method", METHODS)
def test_ties_are_broken_by_index_like_torchvision(method):
    rng = np.random.default_rng(1)
    boxes = clustered_boxes(rng, 200, clusters=5)
    scores = rng.integers(0, 4, size=200).astype(np.float32)  # many equal scores
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=200, method=method)), ref
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("num_classes", [1, 7, 80])
def test_batched_matches_torchvision(num_classes, method):
    rng = np.random.default_rng(num_classes)
    boxes = clustered_boxes(rng, 400)
    scores = rng.uniform(size=400).astype(np.float32)
    classes = rng.choice(rng.integers(-50, 1000, size=num_classes), size=400)  # any int ids
    for threshold in (0.3, 0.5, 0.8):
        # torchvision's per-class path: for few boxes torchvision.ops.batched_nms offsets the
        # boxes of each class instead, which with large class ids rounds their coordinates.
        ref = _batched_nms_vanilla(
            torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), threshold
        ).numpy()
        out = ops.batched_nms(
            boxes, scores, classes, iou_threshold=threshold, max_output_size=400, method=method
        )
        np.testing.assert_array_equal(kept(*out), ref)


@pytest.mark.parametrize("method", METHODS)
def test_vmap_over_images(method):
    rng = np.random.default_rng(3)
    boxes = np.stack([clustered_boxes(rng, 100) for _ in range(3)])
    scores = rng.uniform(size=(3, 100)).astype(np.float32)
    fn = jax.jit(
        jax.vmap(lambda b, s: ops.nms(b, s, iou_threshold=0.5, max_output_size=50, method=method))
    )
    indices, valid = fn(boxes, scores)
    assert indices.shape == valid.shape == (3, 50)
    for i in range(3):
        ref = torchvision.ops.nms(
            torch.from_numpy(boxes[i]), torch.from_numpy(scores[i]), 0.5
        ).numpy()
        np.testing.assert_array_equal(kept(indices[i], valid[i]), ref[:50])


@pytest.mark.parametrize("method", METHODS)
def test_batched_under_jit_and_vmap(method):
    rng = np.random.default_rng(4)
    boxes = np.stack([clustered_boxes(rng, 150) for _ in range(2)])
    scores = rng.uniform(size=(2, 150)).astype(np.float32)
    classes = rng.integers(0, 5, size=(2, 150))
    fn = jax.jit(
        jax.vmap(
            lambda b, s, c: ops.batched_nms(
                b, s, c, iou_threshold=0.6, max_output_size=40, method=method
            )
        )
    )
    indices, valid = fn(boxes, scores, classes)
    for i in range(2):
        ref = torchvision.ops.batched_nms(
            torch.from_numpy(boxes[i]),
            torch.from_numpy(scores[i]),
            torch.from_numpy(classes[i]),
            0.6,
        ).numpy()
        np.testing.assert_array_equal(kept(indices[i], valid[i]), ref[:40])


@pytest.mark.parametrize("method", METHODS)
def test_invalid_boxes_are_left_out(method):
    rng = np.random.default_rng(5)
    boxes = clustered_boxes(rng, 300)
    scores = rng.uniform(size=300).astype(np.float32)
    classes = rng.integers(0, 4, size=300)
    valid = rng.uniform(size=300) < 0.6
    subset = np.flatnonzero(valid)
    tb, ts = torch.from_numpy(boxes[subset]), torch.from_numpy(scores[subset])
    ref = subset[torchvision.ops.nms(tb, ts, 0.5).numpy()]
    out = ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=300, valid=valid, method=method)
    np.testing.assert_array_equal(kept(*out), ref)
    ref = subset[_batched_nms_vanilla(tb, ts, torch.from_numpy(classes[subset]), 0.5).numpy()]
    out = ops.batched_nms(
        boxes, scores, classes, iou_threshold=0.5, max_output_size=300, valid=valid, method=method
    )
    np.testing.assert_array_equal(kept(*out), ref)
    none = ops.batched_nms(
        boxes,
        scores,
        classes,
        iou_threshold=0.5,
        max_output_size=5,
        valid=np.zeros(300, bool),
        method=method,
    )
    assert not np.asarray(none[1]).any()


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_inputs(method):
    empty = ops.nms(
        jnp.zeros((0, 4)), jnp.zeros((0,)), iou_threshold=0.5, max_output_size=3, method=method
    )
    assert not np.asarray(empty[1]).any()
    one = ops.nms(
        jnp.array([[0.0, 0, 1, 1]]),
        jnp.array([0.3]),
        iou_threshold=0.5,
        max_output_size=3,
        method=method,
    )
    np.testing.assert_array_equal(one[1], [True, False, False])
    # Identical boxes: only the best survives.
    same = ops.nms(
        jnp.ones((5, 4)) * jnp.array([0, 0, 2, 2.0]),
        jnp.arange(5.0),
        iou_threshold=0.5,
        max_output_size=5,
        method=method,
    )
    np.testing.assert_array_equal(kept(*same), [4])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iou_threshold": 0.0, "max_output_size": 3}, "iou_threshold"),
        ({"iou_threshold": 1.5, "max_output_size": 3}, "iou_threshold"),
        ({"iou_threshold": 0.5, "max_output_size": 0}, "max_output_size"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.nms(np.zeros((2, 4)), np.zeros(2), **kwargs)
    with pytest.raises(ValueError, match="scores must have shape"):
        ops.nms(np.zeros((2, 4)), np.zeros(3), iou_threshold=0.5, max_output_size=2)


def _fraction(value, limit=1 << 23, chunk=1 << 20):
    """Returns integers (p, q), q < 2**23, with float32(p) / float32(q) == value, or None.

    Boxes [0, 0, q, 1] and [0, 0, p, 1] then have areas q and p, intersection p and union
    q, all exact in float32: their IoU is exactly `value`.
    """
    for low in range(1, limit, chunk):
        q = np.arange(low, min(low + chunk, limit), dtype=np.int64)
        p = np.rint(float(value) * q).astype(np.int64)
        hit = (p > 0) & (p <= q) & (p.astype(np.float32) / q.astype(np.float32) == value)
        if hit.any():
            i = int(np.argmax(hit))
            return int(p[i]), int(q[i])
    return None


THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 1 / 3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.999, 1.0]


@pytest.mark.parametrize("iou_threshold", THRESHOLDS)
def test_threshold_is_compared_as_a_double(iou_threshold):
    """IoUs of exactly float32(t) and its float32 neighbours decide as in torchvision."""
    t32 = np.float32(iou_threshold)
    targets = [np.nextafter(t32, np.float32(0)), t32, np.nextafter(t32, np.float32(2))]
    pairs = [(v, _fraction(v)) for v in targets if v <= 1]
    assert pairs[1][1] is not None  # the edge case itself is always built
    boxes, scores, expected = [], [], []
    for k, (value, fraction) in enumerate(p for p in pairs if p[1] is not None):
        p, q = fraction
        boxes += [[0, 2 * k, q, 2 * k + 1], [0, 2 * k, p, 2 * k + 1]]  # IoU exactly `value`
        scores += [1.0 - 0.01 * k, 0.5 - 0.01 * k]
        expected.append(float(value) > iou_threshold)  # suppressed?
    boxes, scores = np.array(boxes, np.float32), np.array(scores, np.float32)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold)
    ref = ref.numpy()
    # The cases are the ones meant: torchvision drops the second box of a pair iff IoU > t.
    assert [2 * k + 1 not in ref for k in range(len(expected))] == expected
    classes = np.zeros(len(boxes), np.int32)
    for method in METHODS:
        out = ops.nms(boxes, scores, iou_threshold=iou_threshold, max_output_size=8, method=method)
        np.testing.assert_array_equal(kept(*out), ref)
        out = ops.batched_nms(
            boxes, scores, classes, iou_threshold=iou_threshold, max_output_size=8, method=method
        )
        np.testing.assert_array_equal(kept(*out), ref)


def test_float32_of_the_threshold_is_suppressed_at_0_2():
    # float32(0.2) = 0.2000000030 > 0.2: torchvision drops a box of IoU exactly float32(0.2).
    boxes = np.array([[0, 0, 5, 1], [0, 0, 1, 1]], np.float32)  # IoU = 1 / 5
    scores = np.array([0.9, 0.8], np.float32)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.2).numpy()
    np.testing.assert_array_equal(ref, [0])
    for method in METHODS:
        out = ops.nms(boxes, scores, iou_threshold=0.2, max_output_size=2, method=method)
        np.testing.assert_array_equal(kept(*out), ref)


def _overflowing_boxes(dtype, rng, num=60):
    """[num, 4] boxes of `dtype` whose widths or areas overflow when computed in it."""
    if dtype == np.int8:
        xy = rng.integers(-120, 0, size=(num, 2))
        wh = rng.integers(60, 120, size=(num, 2))  # x2 - x1 up to 240 > 127
    elif dtype == np.int16:
        xy = rng.integers(-20000, 0, size=(num, 2))
        wh = rng.integers(10000, 20000, size=(num, 2))  # areas ~1e8 > 32767
    elif dtype == np.int32:
        xy = rng.integers(-200000, 0, size=(num, 2))
        wh = rng.integers(60000, 120000, size=(num, 2))  # areas ~1e10 > 2**31
    else:  # 16-bit floats: areas up to 6e5 > 65504, float16's largest
        xy = rng.uniform(0, 800, size=(num, 2))
        wh = rng.uniform(300, 800, size=(num, 2))
    return np.concatenate([xy, xy + wh], 1).astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "float16", "bfloat16"])
def test_narrow_dtypes_are_computed_in_float32(dtype):
    """Boxes torchvision's CPU kernel refuses: as torchvision on the boxes cast to float32."""
    rng = np.random.default_rng(7)
    np_dtype = jnp.dtype(dtype) if dtype == "bfloat16" else np.dtype(dtype)
    boxes = _overflowing_boxes(np.float32 if dtype == "bfloat16" else np_dtype, rng)
    boxes = jnp.asarray(boxes, np_dtype)
    scores = rng.uniform(size=len(boxes)).astype(np.float32)
    as_float = torch.from_numpy(np.array(boxes.astype(jnp.float32)))
    for threshold in (0.3, 0.6):
        ref = torchvision.ops.nms(as_float, torch.from_numpy(scores), threshold).numpy()
        assert 5 < len(ref) < len(boxes) - 5  # the boxes do overlap
        for method in METHODS:
            out = ops.nms(boxes, scores, iou_threshold=threshold, max_output_size=60, method=method)
            np.testing.assert_array_equal(kept(*out), ref)
            out = ops.batched_nms(
                boxes,
                jnp.asarray(scores, jnp.float16),  # half scores too: exact in float32
                np.zeros(len(boxes), np.int32),
                iou_threshold=threshold,
                max_output_size=60,
                method=method,
            )
            np.testing.assert_array_equal(kept(*out), ref)


def _while_loops(fn, platform, *args):
    """Returns the number of while loops in `fn` lowered for `platform` (no device needed)."""
    exported = jax.export.export(jax.jit(fn), platforms=[platform])(*args)
    return exported.mlir_module().count("stablehlo.while")


@pytest.mark.parametrize("max_output_size", [76, 75])
def test_auto_picks_by_platform_and_output_size(max_output_size):
    """GPU/TPU: tiled. CPU: greedy if more than a quarter of the boxes may be kept, else tiled."""
    rng = np.random.default_rng(8)
    boxes = clustered_boxes(rng, 300)
    scores = rng.uniform(size=300).astype(np.float32)
    classes = rng.integers(0, 3, size=300)

    def single(method):
        return lambda b, s: ops.nms(
            b, s, iou_threshold=0.5, max_output_size=max_output_size, method=method
        )

    def per_class(method):
        return lambda b, s, c: ops.batched_nms(
            b, s, c, iou_threshold=0.5, max_output_size=max_output_size, method=method
        )

    # greedy: one loop; tiled: an outer loop over tiles around the inner fixed-point loop.
    assert _while_loops(single("greedy"), "cpu", boxes, scores) == 1
    assert _while_loops(single("tiled"), "cpu", boxes, scores) == 2
    on_cpu = 1 if max_output_size > 300 / 4 else 2
    for make, args in ((single, (boxes, scores)), (per_class, (boxes, scores, classes))):
        assert _while_loops(make("auto"), "cpu", *args) == on_cpu
        assert _while_loops(make("auto"), "tpu", *args) == 2
        assert _while_loops(make("auto"), "cuda", *args) == 2
        # And 'auto' computes the same thing.
        np.testing.assert_array_equal(
            kept(*jax.jit(make("auto"))(*args)), kept(*jax.jit(make("greedy"))(*args))
        )


def test_bad_method():
    with pytest.raises(ValueError, match=r"method must be one of .* got 'fast'"):
        ops.nms(np.zeros((2, 4)), np.zeros(2), iou_threshold=0.5, max_output_size=2, method="fast")
    with pytest.raises(ValueError, match="method must be one of"):
        ops.batched_nms(
            np.zeros((2, 4)),
            np.zeros(2),
            np.zeros(2, int),
            iou_threshold=0.5,
            max_output_size=2,
            method="",
        )
