"""NMS and batched NMS: the same kept boxes, in the same order, as torchvision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops.boxes import _batched_nms_vanilla

from jaxseg import ops


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


def test_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(3, 0) = 0.9, IoU(3, 1) = 72 / 118 = 0.61, IoU(0, 1) = 81 / 119 = 0.68.
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=4)), [3, 2]
    )
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.65, max_output_size=4)), [3, 1, 2]
    )
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.95, max_output_size=4)), [3, 0, 1, 2]
    )
    indices, valid = ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=6)
    np.testing.assert_array_equal(valid, [True, True, False, False, False, False])
    np.testing.assert_array_equal(indices[2:], 0)


@pytest.mark.parametrize("iou_threshold", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0])
def test_matches_torchvision_at_every_threshold(iou_threshold):
    rng = np.random.default_rng(int(iou_threshold * 100))
    boxes = clustered_boxes(rng, 500)
    scores = rng.uniform(size=500).astype(np.float32)
    ref = torchvision.ops.nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold
    ).numpy()
    fn = jax.jit(lambda b, s: ops.nms(b, s, iou_threshold=iou_threshold, max_output_size=500))
    np.testing.assert_array_equal(kept(*fn(boxes, scores)), ref)
    # Truncation keeps the first max_output_size of the same sequence.
    short = ops.nms(boxes, scores, iou_threshold=iou_threshold, max_output_size=7)
    np.testing.assert_array_equal(kept(*short), ref[:7])


def test_ties_are_broken_by_index_like_torchvision():
    rng = np.random.default_rng(1)
    boxes = clustered_boxes(rng, 200, clusters=5)
    scores = rng.integers(0, 4, size=200).astype(np.float32)  # many equal scores
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    np.testing.assert_array_equal(
        kept(*ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=200)), ref
    )


@pytest.mark.parametrize("num_classes", [1, 7, 80])
def test_batched_matches_torchvision(num_classes):
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
        out = ops.batched_nms(boxes, scores, classes, iou_threshold=threshold, max_output_size=400)
        np.testing.assert_array_equal(kept(*out), ref)


def test_vmap_over_images():
    rng = np.random.default_rng(3)
    boxes = np.stack([clustered_boxes(rng, 100) for _ in range(3)])
    scores = rng.uniform(size=(3, 100)).astype(np.float32)
    fn = jax.jit(jax.vmap(lambda b, s: ops.nms(b, s, iou_threshold=0.5, max_output_size=50)))
    indices, valid = fn(boxes, scores)
    assert indices.shape == valid.shape == (3, 50)
    for i in range(3):
        ref = torchvision.ops.nms(
            torch.from_numpy(boxes[i]), torch.from_numpy(scores[i]), 0.5
        ).numpy()
        np.testing.assert_array_equal(kept(indices[i], valid[i]), ref[:50])


def test_batched_under_jit_and_vmap():
    rng = np.random.default_rng(4)
    boxes = np.stack([clustered_boxes(rng, 150) for _ in range(2)])
    scores = rng.uniform(size=(2, 150)).astype(np.float32)
    classes = rng.integers(0, 5, size=(2, 150))
    fn = jax.jit(
        jax.vmap(lambda b, s, c: ops.batched_nms(b, s, c, iou_threshold=0.6, max_output_size=40))
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


def test_invalid_boxes_are_left_out():
    rng = np.random.default_rng(5)
    boxes = clustered_boxes(rng, 300)
    scores = rng.uniform(size=300).astype(np.float32)
    classes = rng.integers(0, 4, size=300)
    valid = rng.uniform(size=300) < 0.6
    subset = np.flatnonzero(valid)
    tb, ts = torch.from_numpy(boxes[subset]), torch.from_numpy(scores[subset])
    ref = subset[torchvision.ops.nms(tb, ts, 0.5).numpy()]
    out = ops.nms(boxes, scores, iou_threshold=0.5, max_output_size=300, valid=valid)
    np.testing.assert_array_equal(kept(*out), ref)
    ref = subset[_batched_nms_vanilla(tb, ts, torch.from_numpy(classes[subset]), 0.5).numpy()]
    out = ops.batched_nms(
        boxes, scores, classes, iou_threshold=0.5, max_output_size=300, valid=valid
    )
    np.testing.assert_array_equal(kept(*out), ref)
    none = ops.batched_nms(
        boxes, scores, classes, iou_threshold=0.5, max_output_size=5, valid=np.zeros(300, bool)
    )
    assert not np.asarray(none[1]).any()


def test_degenerate_inputs():
    empty = ops.nms(jnp.zeros((0, 4)), jnp.zeros((0,)), iou_threshold=0.5, max_output_size=3)
    assert not np.asarray(empty[1]).any()
    one = ops.nms(
        jnp.array([[0.0, 0, 1, 1]]), jnp.array([0.3]), iou_threshold=0.5, max_output_size=3
    )
    np.testing.assert_array_equal(one[1], [True, False, False])
    # Identical boxes: only the best survives.
    same = ops.nms(
        jnp.ones((5, 4)) * jnp.array([0, 0, 2, 2.0]),
        jnp.arange(5.0),
        iou_threshold=0.5,
        max_output_size=5,
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
