"""Mask pasting and mask targets against torchvision."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes

from jaxseg import ops


def random_boxes(rng, num, height, width):
    xy = rng.uniform([-10, -10], [width, height], size=(num, 2))
    wh = rng.uniform(0.5, 40, size=(num, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[0] = [3.0, 4.0, 3.2, 4.1]  # smaller than a pixel
    boxes[1] = [-5.0, -5.0, width + 5.0, height + 5.0]  # covers the image
    return boxes


@pytest.mark.parametrize("mask_size", [7, 28])
def test_paste_matches_torchvision(mask_size):
    rng = np.random.default_rng(mask_size)
    height, width = 50, 70
    masks = rng.uniform(size=(25, mask_size, mask_size)).astype(np.float32)
    boxes = random_boxes(rng, 25, height, width)
    boxes[2] = [-9.0, 3.0, -6.0, 9.0]  # left of the image
    out = jax.jit(ops.paste_masks_in_image, static_argnums=2)(masks, boxes, (height, width))
    assert out.shape == (25, height, width)
    # torchvision slices with a negative end for boxes left of or above the image and pastes
    # into the wrong place (or fails); jaxseg pastes nothing there.
    outside = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    assert outside.any() and not np.asarray(out)[outside].any()
    ref = paste_masks_in_image(
        torch.from_numpy(masks[~outside])[:, None],
        torch.from_numpy(boxes[~outside]),
        (height, width),
    )
    np.testing.assert_allclose(np.asarray(out)[~outside], ref[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_paste_hand_computed():
    # A 1x1 mask of value 1 in box (2, 2, 4, 4) with padding 1 grows to box (0, 0, 6, 6)
    # (scale 3): a 7x7 resize of [[0,0,0],[0,1,0],[0,0,0]] whose centre pixel is 1.
    out = np.asarray(
        ops.paste_masks_in_image(np.ones((1, 1, 1)), np.array([[2.0, 2, 4, 4]]), (8, 8))
    )
    assert out[0, 3, 3] == 1.0
    assert out[0, 7].max() == 0.0 and out[0, :, 7].max() == 0.0
    np.testing.assert_allclose(out[0], out[0].T)


def test_mask_targets_match_torchvision_roi_align():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(4, 40, 30)) > 0.5).astype(np.float32)
    boxes = random_boxes(rng, 12, 40, 30)
    instance = rng.integers(0, 4, size=12)
    out = ops.roi_mask_targets(masks, boxes, instance, 14, sampling_ratio=2, aligned=False)
    rois = torch.cat([torch.from_numpy(instance)[:, None].float(), torch.from_numpy(boxes)], 1)
    ref = torchvision.ops.roi_align(torch.from_numpy(masks)[:, None], rois, 14, 1.0, 2, False)
    np.testing.assert_allclose(out, ref[:, 0].numpy(), rtol=1e-5, atol=1e-5)


def test_mask_targets_of_a_box_around_a_square_mask():
    masks = np.zeros((2, 16, 16), np.float32)
    masks[1, 4:12, 4:12] = 1.0
    out = ops.roi_mask_targets(masks, np.array([[4.0, 4, 12, 12]]), np.array([1]), 4, aligned=True)
    np.testing.assert_array_equal(out, np.ones((1, 4, 4)))
    out = ops.roi_mask_targets(masks, np.array([[4.0, 4, 12, 12]]), np.array([0]), 4, aligned=True)
    np.testing.assert_array_equal(out, np.zeros((1, 4, 4)))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\[R, M, M\]"):
        ops.paste_masks_in_image(np.zeros((2, 3, 4)), np.zeros((2, 4)), (5, 5))
    with pytest.raises(ValueError, match="one box per mask"):
        ops.paste_masks_in_image(np.zeros((2, 3, 3)), np.zeros((3, 4)), (5, 5))
    with pytest.raises(ValueError, match="instance_index"):
        ops.roi_mask_targets(np.zeros((2, 5, 5)), np.zeros((3, 4)), np.zeros(2, int), 4)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        ops.roi_mask_targets(jnp.zeros((0, 5, 5)), np.zeros((3, 4)), np.zeros(3, int), 4)


def canvas_case(rng, num_rois=30, height=40, width=44):
    masks = (rng.uniform(size=(3, height, width)) > 0.5).astype(np.float32)
    xy = rng.uniform([-6, -6], [width, height], size=(num_rois, 2))
    wh = rng.uniform(0.3, 1.2 * max(height, width), size=(num_rois, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return masks, boxes, rng.integers(0, 3, size=num_rois)


def torch_mask_targets(masks, boxes, instance, size, ratio=-1, aligned=False):
    rois = torch.cat([torch.from_numpy(instance)[:, None].float(), torch.from_numpy(boxes)], 1)
    out = torchvision.ops.roi_align(
        torch.from_numpy(masks)[:, None], rois, size, 1.0, ratio, aligned
    )
    return out[:, 0].numpy()


def test_mask_target_defaults_are_project_masks_on_boxes():
    rng = np.random.default_rng(3)
    masks, boxes, instance = canvas_case(rng)
    assert np.asarray(ops.adaptive_sampling_grid(boxes, 14)).max() > 2  # adaptive matters
    out = jax.jit(lambda m, b, i: ops.roi_mask_targets(m, b, i, 14))(masks, boxes, instance)
    ref = project_masks_on_boxes(
        torch.from_numpy(masks), torch.from_numpy(boxes), torch.from_numpy(instance), 14
    )
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture(params=["gather", "products"])
def mask_target_form(request, monkeypatch):
    """Forces either of roi_mask_targets' two exact forms (it picks one by cost)."""
    cost = 0.0 if request.param == "gather" else 1e9
    monkeypatch.setattr(sys.modules["jaxseg.ops.masks"], "GATHER_COST", cost)
    return request.param


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("cap", [3, 16])
def test_adaptive_mask_targets_match_torchvision(aligned, cap, mask_target_form):
    rng = np.random.default_rng(cap + int(aligned))
    masks, boxes, instance = canvas_case(rng, 40)
    grid = np.asarray(ops.adaptive_sampling_grid(boxes, 14, aligned=aligned)).max(axis=1)
    out = ops.roi_mask_targets(masks, boxes, instance, 14, aligned=aligned, max_sampling_ratio=cap)
    ref = torch_mask_targets(masks, boxes, instance, 14, -1, aligned)
    fits = grid <= cap
    assert fits.sum() >= 10
    np.testing.assert_allclose(np.asarray(out)[fits], ref[fits], rtol=1e-5, atol=1e-5)
    # Past the cap, RoIs take `cap` samples along the axes beyond it (as roi_align).
    beyond = np.asarray(ops.adaptive_sampling_grid(boxes, 14, aligned=aligned)).min(axis=1) > cap
    if beyond.any():
        capped = torch_mask_targets(masks, boxes, instance, 14, cap, aligned)
        np.testing.assert_allclose(np.asarray(out)[beyond], capped[beyond], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cap", [2, 16])
def test_fixed_ratio_and_given_grid_match_torchvision(cap, mask_target_form):
    rng = np.random.default_rng(4)
    masks, boxes, instance = canvas_case(rng, 20)
    for ratio in (1, 3):
        ref = torch_mask_targets(masks, boxes, instance, 14, ratio)
        fixed = ops.roi_mask_targets(masks, boxes, instance, 14, sampling_ratio=ratio)
        np.testing.assert_allclose(fixed, ref, rtol=1e-5, atol=1e-5)
        given = ops.roi_mask_targets(
            masks,
            boxes,
            instance,
            14,
            sampling_grid=np.full((20, 2), ratio),
            max_sampling_ratio=max(cap, ratio),
        )
        np.testing.assert_allclose(given, ref, rtol=1e-5, atol=1e-5)


def test_mask_target_sampling_arguments_are_checked():
    masks, boxes = np.zeros((2, 8, 8)), np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"sampling_grid must have shape \[R, 2\]"):
        ops.roi_mask_targets(masks, boxes, np.zeros(3, int), 4, sampling_grid=np.ones((2, 2)))
    with pytest.raises(ValueError, match="needs sampling_ratio <= 0"):
        ops.roi_mask_targets(
            masks, boxes, np.zeros(3, int), 4, sampling_ratio=2, sampling_grid=np.ones((3, 2))
        )
    with pytest.raises(ValueError, match="max_sampling_ratio"):
        ops.roi_mask_targets(masks, boxes, np.zeros(3, int), 4, max_sampling_ratio=0)
