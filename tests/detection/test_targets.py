"""RPN targets, RoI sampling and mask targets: round trips and agreement of mask formats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.data.instance_masks import AxisAffine, crop_masks
from jaxseg.detection import mask_targets, rpn_targets, sample_rois

GT = np.array([[10, 12, 40, 30], [30, 30, 60, 62], [0, 0, 0, 0]], np.float32)
GT_VALID = np.array([True, True, False])


def test_rpn_targets_round_trip_and_labels():
    anchors = np.concatenate(
        ops.generate_anchors([(16, 16), (8, 8)], (64, 64), sizes=((16,), (32,)))
    )
    labels, deltas = jax.jit(rpn_targets)(anchors, GT, GT_VALID)
    labels, deltas = np.asarray(labels), np.asarray(deltas)
    iou = np.asarray(ops.box_iou(GT[:2], anchors))
    # Foreground: IoU >= 0.7 or the best anchor of a ground truth; background below 0.3.
    best = iou.max(0)
    assert ((labels == 1) >= (best >= 0.7)).all()
    assert (labels[np.argmax(iou, axis=1)] == 1).all()
    np.testing.assert_array_equal(labels == 0, best < 0.3)
    assert ((labels == -1) == ((best >= 0.3) & (labels != 1))).all()
    fg = labels == 1
    decoded = np.asarray(ops.decode_boxes(deltas[fg], anchors[fg]))
    np.testing.assert_allclose(decoded, GT[np.argmax(iou[:, fg], axis=0)], atol=1e-3)
    assert (deltas[~fg] == 0).all()


def test_rpn_targets_without_ground_truth_are_background():
    anchors = np.concatenate(ops.generate_anchors([(8, 8)], (64, 64), sizes=((16,),)))
    labels, deltas = rpn_targets(anchors, np.zeros((2, 4), np.float32), np.zeros(2, bool))
    assert (np.asarray(labels) == 0).all() and np.isfinite(np.asarray(deltas)).all()


def test_sample_rois_appends_ground_truth_and_encodes_targets():
    rng = np.random.default_rng(0)
    proposals = np.sort(rng.uniform(0, 64, (40, 2, 2)), axis=1).transpose(0, 2, 1)
    proposals = proposals.reshape(40, 4)[:, [0, 2, 1, 3]].astype(np.float32)  # xyxy
    proposals[:3] = GT[0] + np.array([1, -1, 2, 1])  # near-duplicates of gt 0
    prop_valid = np.ones(40, bool)
    prop_valid[5:10] = False
    classes = np.array([2, 3, 0])
    fn = jax.jit(
        lambda k: sample_rois(
            k, proposals, prop_valid, GT, classes, GT_VALID, num_samples=16, positive_fraction=0.5
        )
    )
    s = jax.tree_util.tree_map(np.asarray, fn(jax.random.key(0)))
    pos = s.labels > 0
    candidates = np.concatenate([proposals[prop_valid], GT[:2]])
    expected = (np.asarray(ops.box_iou(GT[:2], candidates)).max(0) >= 0.5).sum()
    assert expected >= 5  # the near-duplicates and both ground-truth boxes at least
    assert pos.sum() == min(expected, 8) and pos[: pos.sum()].all() and s.valid.all()
    assert set(s.labels[pos].tolist()) == {2, 3}
    np.testing.assert_array_equal(s.labels[pos], classes[s.matched[pos]])
    decoded = ops.decode_boxes(s.box_targets[pos], s.boxes[pos], weights=(10, 10, 5, 5))
    np.testing.assert_allclose(np.asarray(decoded), GT[s.matched[pos]], atol=1e-3)
    iou = np.asarray(ops.box_iou(GT[:2], s.boxes)).max(0)
    assert (iou[pos] >= 0.5).all() and (iou[~pos] < 0.5).all()
    # Invalid proposals are never sampled.
    for box in s.boxes[~pos]:
        assert not any(np.allclose(box, proposals[i]) for i in range(5, 10))


def test_sample_rois_with_no_ground_truth():
    proposals = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    s = sample_rois(
        jax.random.key(0),
        proposals,
        np.ones(2, bool),
        np.zeros((3, 4), np.float32),
        np.zeros(3, np.int32),
        np.zeros(3, bool),
        num_samples=4,
    )
    np.testing.assert_array_equal(np.asarray(s.valid), [1, 1, 0, 0])
    assert (np.asarray(s.labels) == 0).all() and np.isfinite(np.asarray(s.box_targets)).all()


def _ellipse_canvas(size=64):
    yy, xx = np.mgrid[:size, :size] + 0.5
    first = ((xx - 25) / 15) ** 2 + ((yy - 21) / 9) ** 2 <= 1
    second = ((xx - 45) / 15) ** 2 + ((yy - 46) / 16) ** 2 <= 1
    return np.stack([first, second]).astype(np.uint8)


@pytest.mark.parametrize("aligned", [False, True])
def test_crop_targets_approximate_canvas_targets(aligned):
    masks = _ellipse_canvas()
    boxes = np.array([[10, 12, 40, 30], [30, 30, 60, 62]], np.float32)
    crops = crop_masks(masks, boxes, AxisAffine(1.0, 0.0, 1.0, 0.0), 112)
    rois = np.array(
        [[10, 12, 40, 30], [8, 10, 36, 33], [14, 15, 45, 28], [30, 30, 60, 62], [35, 28, 58, 64]],
        np.float32,
    )
    matched = np.array([0, 0, 0, 1, 1])
    canvas = mask_targets(masks, boxes, rois, matched, mask_format="canvas", aligned=aligned)
    crop = mask_targets(crops, boxes, rois, matched, mask_format="crop", aligned=aligned)
    canvas, crop = np.asarray(canvas), np.asarray(crop)
    assert canvas.shape == crop.shape == (5, 28, 28)
    assert canvas.mean() > 0.3  # the masks are really there
    np.testing.assert_array_less(np.abs(canvas - crop).mean(axis=(1, 2)), 0.03)
    # Thresholded targets agree on almost every cell.
    assert ((canvas >= 0.5) == (crop >= 0.5)).mean() > 0.97


def test_all_zero_masks_give_zero_targets():
    out = mask_targets(np.zeros((2, 16, 16), np.uint8), GT[:2], GT[:2], jnp.array([0, 1]))
    assert np.asarray(out).shape == (2, 28, 28) and (np.asarray(out) == 0).all()


def test_mask_targets_bad_format():
    with pytest.raises(ValueError, match="mask_format"):
        mask_targets(
            np.zeros((1, 8, 8)), GT[:1], GT[:1], np.zeros(1, np.int32), mask_format="polygon"
        )
