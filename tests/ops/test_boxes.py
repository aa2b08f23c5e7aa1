"""Box arithmetic and the box coder against torchvision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils

from jaxseg import ops


def random_boxes(rng, num, extent=100.0):
    xy = rng.uniform(0, extent, size=(num, 2))
    wh = rng.uniform(0, extent / 2, size=(num, 2))
    wh[::7] = 0.0  # some empty boxes
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def test_hand_computed_iou_and_area():
    a = np.array([[0, 0, 2, 2], [0, 0, 0, 0]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    np.testing.assert_allclose(ops.box_area(a), [4.0, 0.0])
    np.testing.assert_allclose(ops.box_iou(a, b), [[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)


def test_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 50), random_boxes(rng, 40)
    ref = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ours = np.asarray(ops.box_iou(a, b))
    # torchvision gives NaN for two empty boxes; jaxseg gives 0.
    np.testing.assert_allclose(ours, np.nan_to_num(ref), rtol=1e-6, atol=1e-7)
    assert np.isfinite(ours).all()


def test_conversions_and_clip_match_torchvision():
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 30) - 20
    t = torch.from_numpy(boxes)
    cxcywh = ops.box_xyxy_to_cxcywh(boxes)
    np.testing.assert_allclose(cxcywh, torchvision.ops.box_convert(t, "xyxy", "cxcywh"), rtol=1e-6)
    np.testing.assert_allclose(ops.box_cxcywh_to_xyxy(cxcywh), boxes, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ops.clip_boxes(boxes, (50, 70)), torchvision.ops.clip_boxes_to_image(t, (50, 70))
    )
    keep = torchvision.ops.remove_small_boxes(t, 3.0).numpy()
    np.testing.assert_array_equal(np.flatnonzero(ops.small_boxes_mask(boxes, 3.0)), keep)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_matches_torchvision(weights):
    rng = np.random.default_rng(2)
    anchors = random_boxes(rng, 64) + np.array([0, 0, 1, 1], np.float32)  # non-empty
    targets = random_boxes(rng, 64) + np.array([0, 0, 1, 1], np.float32)
    ref_coder = det_utils.BoxCoder(weights)
    ref_deltas = ref_coder.encode_single(torch.from_numpy(targets), torch.from_numpy(anchors))
    coder = ops.BoxCoder(weights)
    deltas = coder.encode(targets, anchors)
    np.testing.assert_allclose(deltas, ref_deltas.numpy(), rtol=1e-5, atol=1e-5)
    # Decoding round-trips, and matches torchvision also where the clamp bites.
    np.testing.assert_allclose(coder.decode(deltas, anchors), targets, rtol=1e-4, atol=1e-3)
    wild = rng.normal(scale=4.0, size=(64, 4)).astype(np.float32) * np.array(weights, np.float32)
    ref = ref_coder.decode_single(torch.from_numpy(wild), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(coder.decode(wild, anchors), ref, rtol=1e-5, atol=1e-3)
    assert np.isfinite(np.asarray(coder.decode(wild, anchors))).all()


def test_ops_work_under_jit_and_vmap():
    rng = np.random.default_rng(3)
    a = jnp.asarray(np.stack([random_boxes(rng, 5), random_boxes(rng, 5)]))
    iou = jax.jit(jax.vmap(ops.box_iou))(a, a)
    assert iou.shape == (2, 5, 5)
    np.testing.assert_allclose(iou[1], ops.box_iou(a[1], a[1]))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[N, 4\]"):
        ops.box_iou(np.zeros((4,)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        ops.box_area(np.zeros((3, 5)))
