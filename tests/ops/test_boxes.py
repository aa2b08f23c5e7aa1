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


TORCH_DTYPES = {
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}


@pytest.mark.parametrize("dtype", list(TORCH_DTYPES))
def test_area_and_iou_widen_like_torchvision(dtype):
    # Coordinates that fit every dtype but whose areas do not fit int8 / int16 / float16
    # (255 x 255 > 65504 overflows float16 to inf).
    top = 255 if dtype == "uint8" else 127
    boxes = np.array([[0, 0, top, top], [10, 20, 100, 120], [3, 3, 3, 9], [50, 40, top, 90]])
    ours = jnp.asarray(boxes).astype(dtype)
    theirs = torch.from_numpy(boxes).to(TORCH_DTYPES[dtype])
    area = jax.jit(ops.box_area)(ours)
    iou = jax.jit(ops.box_iou)(ours, ours[:3])
    ref_area = torchvision.ops.box_area(theirs)
    ref_iou = torchvision.ops.box_iou(theirs, theirs[:3])
    assert str(area.dtype) == str(ref_area.dtype).removeprefix("torch.")
    assert str(iou.dtype) == str(ref_iou.dtype).removeprefix("torch.")
    np.testing.assert_array_equal(np.asarray(area, np.float64), ref_area.double().numpy())
    exact = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_array_equal(np.asarray(area, np.float64), exact)  # no overflow
    ref = ref_iou.double().numpy()
    if dtype == "uint8":
        # torchvision subtracts uint8 corners before widening: a disjoint pair wraps around.
        ref = torchvision.ops.box_iou(theirs.int(), theirs[:3].int()).double().numpy()
    np.testing.assert_allclose(np.asarray(iou, np.float64), np.nan_to_num(ref), rtol=1e-6)


def test_float16_area_does_not_overflow():
    boxes = jnp.array([[0.0, 0.0, 300.0, 300.0], [0.0, 0.0, 256.0, 256.0]], jnp.float16)
    np.testing.assert_array_equal(ops.box_area(boxes), [90000.0, 65536.0])
    iou = ops.box_iou(boxes, boxes)
    assert iou.dtype == jnp.float32
    np.testing.assert_allclose(iou, [[1.0, 65536 / 90000], [65536 / 90000, 1.0]], rtol=1e-7)


def test_int8_iou_where_torchvision_wraps():
    # torchvision subtracts int8 corners in int8: 100 - (-100) wraps to -56 and the IoU of a
    # box with itself comes out 0. jaxseg widens first.
    boxes = np.array([[-100, -100, 100, 100], [0, 0, 100, 100]], np.int8)
    t = torch.from_numpy(boxes)
    assert torchvision.ops.box_iou(t, t)[0, 0] == 0.0
    np.testing.assert_allclose(ops.box_iou(boxes, boxes), [[1.0, 0.25], [0.25, 1.0]])
    np.testing.assert_allclose(
        torchvision.ops.box_iou(t.int(), t.int()), [[1.0, 0.25], [0.25, 1.0]]
    )


@pytest.mark.parametrize("dtype", list(TORCH_DTYPES))
def test_conversions_and_clip_keep_torchvisions_dtypes(dtype):
    boxes = np.array([[0, 2, 10, 12], [4, 3, 7, 9]])
    ours = jnp.asarray(boxes).astype(dtype)
    theirs = torch.from_numpy(boxes).to(TORCH_DTYPES[dtype])

    def same_dtype(a, t):
        assert str(a.dtype) == str(t.dtype).removeprefix("torch."), (a.dtype, t.dtype)

    same_dtype(ops.box_xyxy_to_cxcywh(ours), torchvision.ops.box_convert(theirs, "xyxy", "cxcywh"))
    same_dtype(ops.box_cxcywh_to_xyxy(ours), torchvision.ops.box_convert(theirs, "cxcywh", "xyxy"))
    same_dtype(ops.clip_boxes(ours, (8, 8)), torchvision.ops.clip_boxes_to_image(theirs, (8, 8)))
    np.testing.assert_array_equal(
        np.asarray(ops.clip_boxes(ours, (8, 8)), np.float64),
        torchvision.ops.clip_boxes_to_image(theirs, (8, 8)).double().numpy(),
    )
