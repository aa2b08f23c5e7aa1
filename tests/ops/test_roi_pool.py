"""RoIPool: the seed example, torchvision parity (values and gradients), jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from jaxseg import ops


def torch_roi_pool(features, boxes, output_size, scale):
    f = torch.from_numpy(np.array(features)).permute(2, 0, 1)[None]
    out = torchvision.ops.roi_pool(
        f, [torch.from_numpy(np.asarray(boxes, np.float32))], output_size, scale
    )
    return out.permute(0, 2, 3, 1).numpy()


def test_seed_example_whole_map_2x2(seed_map):
    out = ops.roi_pool(seed_map[..., None], [[0.0, 0.0, 3.0, 3.0]], 2)
    np.testing.assert_allclose(out[0, :, :, 0], [[0.5, 0.9], [0.7, 0.9]])


def test_seed_example_fractional_box_is_snapped(seed_map):
    # Box (0.6, 0.4, 2.4, 2.6) rounds to (1, 0, 2, 3): a 2-wide, 4-high window; its 2x2 bins
    # are rows {0, 1} / {2, 3} and columns {1} / {2}. The fractional borders are lost.
    out = ops.roi_pool(seed_map[..., None], [[0.6, 0.4, 2.4, 2.6]], 2)
    np.testing.assert_allclose(out[0, :, :, 0], [[0.4, 0.9], [0.7, 0.9]])
    np.testing.assert_allclose(
        out, torch_roi_pool(seed_map[..., None], [[0.6, 0.4, 2.4, 2.6]], 2, 1.0)
    )


def test_rounds_half_away_from_zero():
    # 0.5 rounds to 1 and 2.5 to 3 (C's round), where round-half-even would give 0 and 2.
    features = np.arange(25, dtype=np.float32).reshape(5, 5, 1)
    out = ops.roi_pool(features, [[0.5, 0.5, 2.5, 2.5]], 1)
    assert out[0, 0, 0, 0] == features[3, 3, 0]


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 1 / 16])
@pytest.mark.parametrize("output_size", [(1, 1), (2, 3), (7, 7)])
def test_matches_torchvision(spatial_scale, output_size):
    rng = np.random.default_rng(int(100 * spatial_scale) + output_size[1])
    for height, width in [(1, 1), (6, 9), (17, 13)]:
        features = rng.normal(size=(height, width, 3)).astype(np.float32)
        extent = max(height, width) / spatial_scale
        xy = rng.uniform(-0.3 * extent, 1.1 * extent, size=(40, 2))
        wh = rng.uniform(0, extent, size=(40, 2))
        wh[::5] = 0
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        out = ops.roi_pool(features, boxes, output_size, spatial_scale=spatial_scale)
        np.testing.assert_array_equal(
            out, torch_roi_pool(features, boxes, output_size, spatial_scale)
        )


def test_gradients_match_torchvision():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(10, 12, 2)).astype(np.float32)
    boxes = np.array([[0, 0, 9, 9], [2.3, 1.7, 11.1, 8.2], [5, 5, 6, 6]], np.float32)
    cotangent = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    grad = jax.jit(jax.grad(lambda f: jnp.sum(ops.roi_pool(f, boxes, 3) * cotangent)))(features)
    f = torch.from_numpy(features).permute(2, 0, 1)[None].clone().requires_grad_()
    torchvision.ops.roi_pool(f, [torch.from_numpy(boxes)], 3, 1.0).backward(
        torch.from_numpy(cotangent).permute(0, 3, 1, 2)
    )
    np.testing.assert_allclose(grad, f.grad[0].permute(1, 2, 0).numpy(), rtol=1e-6)


def test_multiscale_uses_each_rois_level():
    rng = np.random.default_rng(6)
    features = [rng.normal(size=(s, s, 2)).astype(np.float32) for s in (32, 16, 8, 4)]
    boxes = np.array(
        [[0, 0, 20, 20], [0, 0, 150, 150], [10, 10, 300, 300], [0, 0, 100, 100]], np.float32
    )
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    out = ops.multiscale_roi_pool(features, boxes, 2, scales=scales)
    levels = np.asarray(ops.fpn_levels(boxes, min_level=2, max_level=5))
    np.testing.assert_array_equal(levels, [0, 1, 2, 0])
    for r, lvl in enumerate(levels):
        ref = torch_roi_pool(features[lvl], boxes[r : r + 1], 2, scales[lvl])
        np.testing.assert_array_equal(out[r : r + 1], ref)


def test_vmap_over_images_and_errors():
    features = jnp.ones((2, 6, 6, 1))
    boxes = jnp.zeros((2, 3, 4))
    assert jax.jit(jax.vmap(lambda f, b: ops.roi_pool(f, b, 2)))(features, boxes).shape == (
        2,
        3,
        2,
        2,
        1,
    )
    with pytest.raises(ValueError, match="spatial_scale"):
        ops.roi_pool(np.ones((4, 4, 1)), np.zeros((1, 4)), 2, spatial_scale=-1.0)
    with pytest.raises(ValueError, match="output_size"):
        ops.roi_pool(np.ones((4, 4, 1)), np.zeros((1, 4)), (2, 0))


def torch_roi_pool_grad(features, boxes, output_size, scale, cotangent):
    f = torch.from_numpy(np.array(features)).permute(2, 0, 1)[None].clone().requires_grad_()
    out = torchvision.ops.roi_pool(f, [torch.from_numpy(boxes)], output_size, scale)
    out.backward(torch.from_numpy(cotangent).permute(0, 3, 1, 2))
    return f.grad[0].permute(1, 2, 0).numpy()


def test_tied_maxima_send_the_gradient_to_the_first_in_scan_order():
    # A bin of equal values (a ReLU map of zeros): torchvision's argmax keeps the first
    # maximum, row by row, so all of the bin's gradient lands on its top-left pixel.
    features = np.zeros((4, 6, 1), np.float32)
    features[3, 5] = 1.0
    grad = jax.jit(jax.grad(lambda f: ops.roi_pool(f, [[0.0, 0.0, 5.0, 3.0]], (2, 3)).sum()))(
        features
    )
    expected = np.zeros((4, 6, 1), np.float32)
    expected[[0, 0, 0, 2, 2], [0, 2, 4, 0, 2], 0] = 1.0  # five tied bins, each at its first
    expected[3, 5, 0] = 1.0  # the one bin with a unique maximum
    np.testing.assert_array_equal(grad, expected)
    ref = torch_roi_pool_grad(
        features,
        np.array([[0, 0, 5, 3]], np.float32),
        (2, 3),
        1.0,
        np.ones((1, 2, 3, 1), np.float32),
    )
    np.testing.assert_array_equal(grad, ref)


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
def test_tied_maxima_gradients_match_torchvision(spatial_scale):
    # ReLU of small integers: most bins have ties, some rows tie within and across rows;
    # overlapping RoIs and bins add up on shared pixels.
    rng = np.random.default_rng(int(10 * spatial_scale))
    features = np.maximum(rng.integers(-3, 3, size=(9, 11, 3)), 0).astype(np.float32)
    extent = 11 / spatial_scale
    xy = rng.uniform(-0.2 * extent, extent, size=(30, 2))
    wh = rng.uniform(0, extent, size=(30, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    cotangent = rng.normal(size=(30, 3, 2, 3)).astype(np.float32)
    grad = jax.jit(
        jax.grad(
            lambda f: jnp.sum(
                ops.roi_pool(f, boxes, (3, 2), spatial_scale=spatial_scale) * cotangent
            )
        )
    )(features)
    ref = torch_roi_pool_grad(features, boxes, (3, 2), spatial_scale, cotangent)
    np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-6)


def test_tied_maxima_in_multiscale_pool_match_torchvision():
    rng = np.random.default_rng(21)
    features = [
        np.maximum(rng.integers(-2, 2, size=(s, s, 2)), 0).astype(np.float32) for s in (16, 8)
    ]
    boxes = np.array([[0, 0, 30, 30], [4, 4, 60, 50], [0, 0, 200, 200]], np.float32)
    scales = [1 / 4, 1 / 8]
    cotangent = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    grads = jax.grad(
        lambda fs: jnp.sum(ops.multiscale_roi_pool(fs, boxes, 2, scales=scales) * cotangent)
    )(features)
    levels = np.asarray(ops.fpn_levels(boxes, min_level=2, max_level=3))
    for lvl in range(2):
        picked = levels == lvl
        ref = torch_roi_pool_grad(features[lvl], boxes[picked], 2, scales[lvl], cotangent[picked])
        np.testing.assert_allclose(grads[lvl], ref, rtol=1e-6, atol=1e-6)
