"""RoIAlign: hand-computed cases, torchvision parity (values and gradients), jit/vmap/grad."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from jaxseg import ops


def ramp(height, width):
    """[H, W, 1] map with value 10 * y + x at pixel (y, x): bilinear sampling is exact on it."""
    y, x = np.mgrid[:height, :width].astype(np.float32)
    return (10 * y + x)[..., None]


def torch_roi_align(features, boxes, output_size, scale, ratio, aligned):
    f = torch.from_numpy(np.array(features)).permute(2, 0, 1)[None]
    out = torchvision.ops.roi_align(
        f, [torch.from_numpy(np.array(boxes, np.float32))], output_size, scale, ratio, aligned
    )
    return out.permute(0, 2, 3, 1).numpy()


def random_boxes(rng, num, extent, max_size):
    """[num, 4] boxes spilling past a map of `extent` pixels, some empty, some tiny."""
    xy = rng.uniform(-0.3 * extent, 1.1 * extent, size=(num, 2))
    wh = rng.uniform(0, max_size, size=(num, 2))
    wh[rng.uniform(size=num) < 0.1] = 0.0  # zero-size boxes
    wh[rng.uniform(size=num) < 0.1] *= 0.01  # tiny boxes
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "aligned, expected",
    # Bin centres of box (0.5, 1, 2.5, 3) at sampling ratio 1: x in {1, 2}, y in {1.5, 2.5};
    # aligned shifts them by -0.5.
    [(False, [[16.0, 17.0], [26.0, 27.0]]), (True, [[10.5, 11.5], [20.5, 21.5]])],
)
def test_bin_centres_on_a_ramp(aligned, expected):
    out = ops.roi_align(ramp(5, 5), [[0.5, 1.0, 2.5, 3.0]], 2, sampling_ratio=1, aligned=aligned)
    np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-6)


def test_samples_past_the_border():
    # y = -0.5 snaps to row 0; x = 4.75 lies in [W - 1, W] and takes the last column alone;
    # y = 5.5 lies beyond [-1, H] and contributes zero.
    features = ramp(5, 5)
    out = ops.roi_align(features, [[4.5, -1.0, 5.0, 0.0]], (1, 1), sampling_ratio=1, aligned=False)
    np.testing.assert_allclose(out[0, 0, 0, 0], 4.0, rtol=1e-6)  # sample (y=-0.5, x=4.75)
    out = ops.roi_align(features, [[0.0, 5.0, 1.0, 6.0]], (1, 1), sampling_ratio=1, aligned=False)
    assert out[0, 0, 0, 0] == 0.0  # sample (y=5.5, x=0.5)


def test_seed_example_roi_align_averages_exact_positions(seed_map):
    # A 2x2 RoIAlign of box (0.5, 0.5, 2.5, 2.5) on the seed map: bin (0, 0) at sampling
    # ratio 2 averages bilinear samples at y, x in {1.0, 1.5} (aligned=False).
    out = ops.roi_align(seed_map[..., None], [[0.5, 0.5, 2.5, 2.5]], 2, aligned=False)
    m = seed_map

    def bilinear(y, x):
        y0, x0 = int(y), int(x)
        fy, fx = y - y0, x - x0
        return (
            m[y0, x0] * (1 - fy) * (1 - fx)
            + m[y0, x0 + 1] * (1 - fy) * fx
            + m[y0 + 1, x0] * fy * (1 - fx)
            + m[y0 + 1, x0 + 1] * fy * fx
        )

    expected = np.mean([bilinear(y, x) for y in (0.75, 1.25) for x in (0.75, 1.25)])
    np.testing.assert_allclose(out[0, 0, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(
        out[..., 0],
        torch_roi_align(seed_map[..., None], [[0.5] * 2 + [2.5] * 2], 2, 1.0, 2, False)[..., 0],
        rtol=1e-6,
    )


def test_roi_align_tracks_subpixel_shifts_roipool_does_not():
    # On a ramp, RoIAlign's 1x1 output is exactly the value at the RoI centre, so it follows a
    # 0.3-pixel shift of the box; RoIPool rounds the box to the grid and does not move.
    features = ramp(8, 8)
    box = np.array([[1.0, 1.0, 5.0, 5.0]], np.float32)
    shifted = box + 0.3
    align = [
        ops.roi_align(features, b, 1, sampling_ratio=2, aligned=True)[0, 0, 0, 0]
        for b in (box, shifted)
    ]
    pool = [ops.roi_pool(features, b, 1)[0, 0, 0, 0] for b in (box, shifted)]
    np.testing.assert_allclose(align[1] - align[0], 0.3 * 10 + 0.3, rtol=1e-5)
    assert pool[1] == pool[0]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 16])
def test_matches_torchvision(aligned, sampling_ratio, spatial_scale):
    rng = np.random.default_rng([int(aligned), sampling_ratio, int(1 / spatial_scale)])
    cases = [((1, 1, 2), (1, 1)), ((7, 5, 3), (2, 3)), ((16, 23, 4), (7, 7)), ((9, 9, 1), (3, 2))]
    for (height, width, channels), output_size in cases:
        features = rng.normal(size=(height, width, channels)).astype(np.float32)
        extent = max(height, width) / spatial_scale
        boxes = random_boxes(rng, 60, extent, extent)
        out = ops.roi_align(
            features,
            boxes,
            output_size,
            spatial_scale=spatial_scale,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
        )
        ref = torch_roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_gradients_match_torchvision(aligned, sampling_ratio):
    rng = np.random.default_rng(7)
    features = rng.normal(size=(12, 9, 3)).astype(np.float32)
    boxes = random_boxes(rng, 30, 24, 24)
    cotangent = rng.normal(size=(30, 4, 5, 3)).astype(np.float32)
    kwargs = dict(spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=aligned)
    grad = jax.grad(lambda f: jnp.sum(ops.roi_align(f, boxes, (4, 5), **kwargs) * cotangent))(
        jnp.asarray(features)
    )

    f = torch.from_numpy(features).permute(2, 0, 1)[None].clone().requires_grad_()
    out = torchvision.ops.roi_align(
        f, [torch.from_numpy(boxes)], (4, 5), 0.5, sampling_ratio, aligned
    )
    out.backward(torch.from_numpy(cotangent).permute(0, 3, 1, 2))
    ref = f.grad[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-5)


def test_jit_vmap_grad_over_a_batch():
    rng = np.random.default_rng(3)
    features = jnp.asarray(rng.normal(size=(2, 10, 12, 4)).astype(np.float32))
    boxes = jnp.asarray(np.stack([random_boxes(rng, 6, 40, 20) for _ in range(2)]))

    @jax.jit
    def loss(features, boxes):
        pooled = jax.vmap(lambda f, b: ops.roi_align(f, b, 3, spatial_scale=0.25))(features, boxes)
        return jnp.sum(pooled**2), pooled

    (value, pooled), grad = jax.value_and_grad(loss, has_aux=True)(features, boxes)
    assert pooled.shape == (2, 6, 3, 3, 4)
    for i in range(2):
        ref = torch_roi_align(features[i], boxes[i], 3, 0.25, 2, True)
        np.testing.assert_allclose(pooled[i], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, np.sum(np.asarray(pooled) ** 2), rtol=1e-5)
    # d(sum out^2)/df = 2 * sum_r (d out_r / df)^T out_r: compare with a per-image vjp.
    for i in range(2):
        _, vjp = jax.vjp(
            partial(ops.roi_align, boxes=boxes[i], output_size=3, spatial_scale=0.25), features[i]
        )
        np.testing.assert_allclose(grad[i], 2 * vjp(pooled[i])[0], rtol=1e-5, atol=1e-6)


def test_gradient_reaches_boxes():
    # Not in torchvision: on a ramp, moving the box right by dx raises every output by dx.
    features = jnp.asarray(ramp(8, 8))
    box = jnp.array([[1.2, 1.1, 4.7, 5.3]])
    grad = jax.grad(lambda b: ops.roi_align(features, b, 2).sum())(box)
    np.testing.assert_allclose(grad.sum(axis=0), [2.0, 20.0, 2.0, 20.0], rtol=1e-5)


def test_bfloat16_features():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 8, 4)).astype(np.float32)
    boxes = random_boxes(rng, 10, 8, 6)
    out = ops.roi_align(jnp.asarray(features, jnp.bfloat16), boxes, 2)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        out.astype(np.float32), torch_roi_align(features, boxes, 2, 1.0, 2, True), atol=0.05
    )


@pytest.mark.parametrize(
    "features, boxes, kwargs, message",
    [
        (np.zeros((4, 4)), np.zeros((1, 4)), {}, r"features must have shape \[H, W, C\]"),
        (np.zeros((0, 4, 1)), np.zeros((1, 4)), {}, "must not be empty"),
        (np.zeros((4, 4, 1)), np.zeros((1, 5)), {}, r"boxes must have shape \[\.\.\., 4\]"),
        (np.zeros((4, 4, 1)), np.zeros((4,)), {}, r"boxes must have shape \[R, 4\]"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"sampling_ratio": 0}, "sampling_ratio"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"sampling_ratio": -1}, "adaptive"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"spatial_scale": 0.0}, "spatial_scale"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"output_size": (0, 2)}, "output_size"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"output_size": -3}, "output_size"),
    ],
)
def test_bad_arguments_name_themselves(features, boxes, kwargs, message):
    kwargs = {"output_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ops.roi_align(features, boxes, **kwargs)


def test_multiscale_matches_torchvision():
    rng = np.random.default_rng(11)
    image_size = 512
    channels = 3
    sizes = [128, 64, 32, 16]  # P2..P5 of a 512 x 512 input
    features = [rng.normal(size=(s, s, channels)).astype(np.float32) for s in sizes]
    # Boxes of every scale, so that every level (and both clamps) is used.
    centre = rng.uniform(0, image_size, size=(200, 2))
    side = np.exp(rng.uniform(np.log(2), np.log(900), size=(200, 2)))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], 1).astype(np.float32)
    levels = ops.fpn_levels(boxes, min_level=2, max_level=5)
    assert set(np.asarray(levels).tolist()) == {0, 1, 2, 3}

    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    maps = {f"p{i + 2}": torch.from_numpy(f).permute(2, 0, 1)[None] for i, f in enumerate(features)}
    ref = pooler(maps, [torch.from_numpy(boxes)], [(image_size, image_size)]).permute(0, 2, 3, 1)
    out = ops.multiscale_roi_align(
        features, boxes, 7, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32], sampling_ratio=2
    )
    # Box corners up to ~900 px carry float32 rounding of ~6e-5 px into the sample positions.
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-4)
    # And the same as a plain roi_align from each RoI's own level.
    for lvl, (f, s) in enumerate(zip(features, [1 / 4, 1 / 8, 1 / 16, 1 / 32], strict=True)):
        picked = np.asarray(levels) == lvl
        single = ops.roi_align(f, boxes[picked], 7, spatial_scale=s, aligned=False)
        np.testing.assert_allclose(np.asarray(out)[picked], single, rtol=1e-6, atol=1e-6)


def test_multiscale_rejects_bad_scales():
    f = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="powers of two"):
        ops.multiscale_roi_align([f, f], np.zeros((1, 4)), 2, scales=[1 / 4, 1 / 6])
    with pytest.raises(ValueError, match="same positive length"):
        ops.multiscale_roi_align([f], np.zeros((1, 4)), 2, scales=[1 / 4, 1 / 8])
    with pytest.raises(ValueError, match="decreasing"):
        ops.multiscale_roi_align([f, f], np.zeros((1, 4)), 2, scales=[1 / 8, 1 / 4])
