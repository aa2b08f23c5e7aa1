"""RoIAlign: hand-computed cases, torchvision parity (values and gradients), jit/vmap/grad."""

import inspect
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
    out = ops.roi_align(seed_map[..., None], [[0.5, 0.5, 2.5, 2.5]], 2, sampling_ratio=2)
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
    for i in range(2):  # the defaults on both sides: adaptive sampling, aligned=False
        f = torch.from_numpy(np.array(features[i])).permute(2, 0, 1)[None]
        ref = torchvision.ops.roi_align(f, [torch.from_numpy(np.array(boxes[i]))], 3, 0.25)
        np.testing.assert_allclose(pooled[i], ref.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
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


@pytest.mark.parametrize(
    "features, boxes, kwargs, message",
    [
        (np.zeros((4, 4)), np.zeros((1, 4)), {}, r"features must have shape \[H, W, C\]"),
        (np.zeros((0, 4, 1)), np.zeros((1, 4)), {}, "must not be empty"),
        (np.zeros((4, 4, 1)), np.zeros((1, 5)), {}, r"boxes must have shape \[\.\.\., 4\]"),
        (np.zeros((4, 4, 1)), np.zeros((4,)), {}, r"boxes must have shape \[R, 4\]"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"sampling_ratio": 1.5}, "sampling_ratio"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"max_sampling_ratio": 0}, "max_sampling_ratio"),
        (np.zeros((4, 4, 1)), np.zeros((1, 4)), {"max_sampling_ratio": 2.0}, "static cap"),
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
        single = ops.roi_align(f, boxes[picked], 7, spatial_scale=s, sampling_ratio=2)
        np.testing.assert_allclose(np.asarray(out)[picked], single, rtol=1e-6, atol=1e-6)


def test_multiscale_rejects_bad_scales():
    f = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="powers of two"):
        ops.multiscale_roi_align([f, f], np.zeros((1, 4)), 2, scales=[1 / 4, 1 / 6])
    with pytest.raises(ValueError, match="same positive length"):
        ops.multiscale_roi_align([f], np.zeros((1, 4)), 2, scales=[1 / 4, 1 / 8])
    with pytest.raises(ValueError, match="decreasing"):
        ops.multiscale_roi_align([f, f], np.zeros((1, 4)), 2, scales=[1 / 8, 1 / 4])


def numpy_roi_align(features, box, output_size, scale, grid, aligned):
    """[oh, ow, C] float64: torchvision's RoIAlign loop for one box, with a (rows, cols) grid
    of samples per bin that may differ per axis (torchvision's takes one ratio for both)."""
    height, width, _ = features.shape
    out_h, out_w = output_size
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = np.asarray(box, np.float64) * scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    grid_h, grid_w = grid

    def bilinear(y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return 0.0
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= height - 1:
            y0, y = height - 1, float(height - 1)
        if x0 >= width - 1:
            x0, x = width - 1, float(width - 1)
        y1_, x1_ = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
        ly, lx = y - y0, x - x0
        return (
            (1 - ly) * (1 - lx) * features[y0, x0]
            + (1 - ly) * lx * features[y0, x1_]
            + ly * (1 - lx) * features[y1_, x0]
            + ly * lx * features[y1_, x1_]
        )

    out = np.zeros((out_h, out_w, features.shape[-1]))
    for ph in range(out_h):
        for pw in range(out_w):
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    out[ph, pw] += bilinear(y, x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w)
            out[ph, pw] /= max(grid_h * grid_w, 1)
    return out


def test_defaults_are_torchvisions():
    ours = inspect.signature(ops.roi_align).parameters
    theirs = inspect.signature(torchvision.ops.roi_align).parameters
    for name in ("spatial_scale", "sampling_ratio", "aligned"):
        assert ours[name].default == theirs[name].default, name
    # And a call ported from torchvision gives torchvision's numbers (grids within the cap).
    rng = np.random.default_rng(1)
    features = rng.normal(size=(12, 14, 2)).astype(np.float32)
    boxes = random_boxes(rng, 40, 14, 12)
    out = jax.jit(lambda f, b: ops.roi_align(f, b, 3))(features, boxes)
    assert np.asarray(ops.adaptive_sampling_grid(boxes, 3)).max() <= ops.DEFAULT_MAX_SAMPLING_RATIO
    f = torch.from_numpy(features).permute(2, 0, 1)[None]
    ref = torchvision.ops.roi_align(f, [torch.from_numpy(boxes)], 3).permute(0, 2, 3, 1)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [-1, 0])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 1 / 16])
def test_adaptive_sampling_matches_torchvision(sampling_ratio, aligned, spatial_scale):
    rng = np.random.default_rng([int(aligned), int(1 / spatial_scale)])
    for (height, width, channels), output_size in [((9, 13, 3), (3, 2)), ((16, 12, 2), (4, 5))]:
        features = rng.normal(size=(height, width, channels)).astype(np.float32)
        extent = max(height, width) / spatial_scale
        boxes = random_boxes(rng, 80, extent, 1.5 * extent)
        grid = np.asarray(
            ops.adaptive_sampling_grid(
                boxes, output_size, spatial_scale=spatial_scale, aligned=aligned
            )
        )
        assert len(np.unique(grid)) >= 4  # RoIs of many grid sizes, 0 included when aligned
        cap = int(grid.max())
        out = jax.jit(
            lambda f, b, output_size=output_size, cap=cap: ops.roi_align(
                f,
                b,
                output_size,
                spatial_scale=spatial_scale,
                sampling_ratio=sampling_ratio,
                aligned=aligned,
                max_sampling_ratio=cap,
            )
        )(features, boxes)
        ref = torch_roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_adaptive_grid_is_torchvisions_ceil():
    # A 7-pixel-high, 2.5-pixel-wide RoI pooled to 2 x 2: ceil(3.5) = 4 rows, ceil(1.25) = 2.
    boxes = np.array([[1.0, 1.0, 3.5, 8.0], [4.0, 4.0, 4.0, 4.0], [5.0, 5.0, 4.0, 4.0]])
    np.testing.assert_array_equal(ops.adaptive_sampling_grid(boxes, 2), [[4, 2], [1, 1], [1, 1]])
    # aligned: no minimum size of 1, and an inverted RoI gets no sample (it pools to 0).
    grid = ops.adaptive_sampling_grid(boxes, 2, aligned=True)
    np.testing.assert_array_equal(grid, [[4, 2], [0, 0], [0, 0]])
    features = np.ones((10, 10, 1), np.float32)
    out = ops.roi_align(features, boxes, 2, aligned=True)
    assert (np.asarray(out[1:]) == 0).all() and np.allclose(out[0], 1.0)


@pytest.mark.parametrize("aligned", [False, True])
def test_adaptive_gradients_match_torchvision(aligned):
    rng = np.random.default_rng(8)
    features = rng.normal(size=(11, 13, 2)).astype(np.float32)
    boxes = random_boxes(rng, 30, 26, 26)
    cotangent = rng.normal(size=(30, 3, 2, 2)).astype(np.float32)
    kwargs = dict(spatial_scale=0.5, sampling_ratio=-1, aligned=aligned, max_sampling_ratio=7)
    assert np.asarray(ops.adaptive_sampling_grid(boxes, (3, 2), spatial_scale=0.5)).max() <= 7
    grad = jax.jit(
        jax.grad(lambda f: jnp.sum(ops.roi_align(f, boxes, (3, 2), **kwargs) * cotangent))
    )(jnp.asarray(features))
    f = torch.from_numpy(features).permute(2, 0, 1)[None].clone().requires_grad_()
    out = torchvision.ops.roi_align(f, [torch.from_numpy(boxes)], (3, 2), 0.5, -1, aligned)
    out.backward(torch.from_numpy(cotangent).permute(0, 3, 1, 2))
    np.testing.assert_allclose(grad, f.grad[0].permute(1, 2, 0).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_adaptive_sampling_beyond_the_cap(aligned):
    # Documented behaviour: a RoI whose grid exceeds max_sampling_ratio along an axis takes
    # max_sampling_ratio samples along it; RoIs within the cap stay exact.
    rng = np.random.default_rng(9)
    features = rng.normal(size=(20, 24, 2)).astype(np.float32)
    boxes = np.array(
        [
            [1.0, 2.0, 4.0, 5.5],  # grid (2, 2): within the cap
            [0.5, 1.0, 21.0, 19.0],  # grid (9, 11): both axes beyond
            [2.0, 0.0, 5.0, 18.5],  # grid (10, 2): rows beyond
            [-3.0, 4.0, 23.5, 6.0],  # grid (1, 14): columns beyond
        ],
        np.float32,
    )
    cap = 3
    grid = np.asarray(ops.adaptive_sampling_grid(boxes, 2, aligned=aligned))
    assert grid[0].max() <= cap and (grid[1] > cap).all() and grid[2:].max(axis=1).min() > cap
    out = np.asarray(ops.roi_align(features, boxes, 2, aligned=aligned, max_sampling_ratio=cap))
    ref = torch_roi_align(features, boxes, 2, 1.0, -1, aligned)
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-6)
    assert np.abs(out[1:] - ref[1:]).max() > 1e-2  # beyond the cap it is not torchvision's
    capped = torch_roi_align(features, boxes[1:2], 2, 1.0, cap, aligned)  # both axes capped
    np.testing.assert_allclose(out[1:2], capped, rtol=1e-5, atol=1e-5)
    for r in range(4):
        expected = numpy_roi_align(
            features, boxes[r], (2, 2), 1.0, np.minimum(grid[r], cap), aligned
        )
        np.testing.assert_allclose(out[r], expected, rtol=1e-5, atol=1e-5)


def torch_low_precision(features, boxes, output_size, ratio, dtype, *, backward_of=None):
    """torchvision's roi_align under CPU autocast to `dtype` (float32 compute, one rounding)."""
    torch_dtype = {jnp.bfloat16: torch.bfloat16, jnp.float16: torch.float16}[dtype]
    f = torch.from_numpy(np.array(features, np.float32)).to(torch_dtype)
    f = f.permute(2, 0, 1)[None].clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch_dtype):
        out = torchvision.ops.roi_align(f, [torch.from_numpy(boxes)], output_size, 1.0, ratio)
    assert out.dtype == torch_dtype
    if backward_of is None:
        return out.permute(0, 2, 3, 1).float().detach().numpy()
    out.backward(torch.from_numpy(np.array(backward_of)).to(torch_dtype).permute(0, 3, 1, 2))
    assert f.grad.dtype == torch_dtype
    return f.grad[0].permute(1, 2, 0).float().numpy()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("sampling_ratio", [2, 4, -1])
def test_low_precision_accumulates_in_float32(dtype, sampling_ratio):
    rng = np.random.default_rng(12)
    features = rng.normal(size=(16, 16, 8)).astype(np.float32)
    features = np.asarray(jnp.asarray(features, dtype).astype(jnp.float32))  # representable
    boxes = random_boxes(rng, 40, 16, 12)
    out = jax.jit(lambda f: ops.roi_align(f, boxes, 3, sampling_ratio=sampling_ratio))(
        jnp.asarray(features, dtype)
    )
    assert out.dtype == dtype
    ref = torch_low_precision(features, boxes, 3, sampling_ratio, dtype)
    out = np.asarray(out.astype(jnp.float32))
    assert_one_rounding_apart(out, ref, dtype)


def assert_one_rounding_apart(out, ref, dtype):
    """One rounding of (nearly) the same float32 sum: equal, or one unit apart where the two
    float32 sums (added in different orders, ~1e-6 apart) straddle a rounding boundary.
    Summing in the low dtype was several units off (up to 1.2e-2 in bfloat16)."""
    ulp = np.asarray(jnp.finfo(dtype).eps, np.float32) * np.abs(ref)
    np.testing.assert_array_less(np.abs(out - ref), ulp * 1.01 + 4e-6)
    assert (out == ref).mean() > 0.97


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_gradient_matches_autocast(dtype):
    rng = np.random.default_rng(13)
    features = np.asarray(jnp.asarray(rng.normal(size=(10, 12, 4)), dtype).astype(jnp.float32))
    boxes = random_boxes(rng, 25, 12, 10)
    cotangent = np.asarray(jnp.asarray(rng.normal(size=(25, 2, 2, 4)), dtype).astype(jnp.float32))
    grad = jax.jit(
        jax.grad(
            lambda f: jnp.sum(
                ops.roi_align(f, boxes, 2, sampling_ratio=2).astype(jnp.float32) * cotangent
            )
        )
    )(jnp.asarray(features, dtype))
    assert grad.dtype == dtype
    ref = torch_low_precision(features, boxes, 2, 2, dtype, backward_of=cotangent)
    assert_one_rounding_apart(np.asarray(grad.astype(jnp.float32)), ref, dtype)


def test_multiscale_bfloat16_matches_autocast():
    rng = np.random.default_rng(14)
    sizes = [32, 16, 8, 4]  # P2..P5 of a 128 x 128 input
    features = [
        np.asarray(jnp.asarray(rng.normal(size=(s, s, 4)), jnp.bfloat16).astype(jnp.float32))
        for s in sizes
    ]
    centre = rng.uniform(0, 128, size=(60, 2))
    side = np.exp(rng.uniform(np.log(4), np.log(300), size=(60, 2)))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], 1).astype(np.float32)
    out = ops.multiscale_roi_align(
        [jnp.asarray(f, jnp.bfloat16) for f in features],
        boxes,
        7,
        scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32],
        sampling_ratio=2,
    )
    assert out.dtype == jnp.bfloat16
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    maps = {
        f"p{i + 2}": torch.from_numpy(f).to(torch.bfloat16).permute(2, 0, 1)[None]
        for i, f in enumerate(features)
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = pooler(maps, [torch.from_numpy(boxes)], [(128, 128)])
    ref = ref.permute(0, 2, 3, 1).float().numpy()
    assert_one_rounding_apart(np.asarray(out.astype(jnp.float32)), ref, jnp.bfloat16)


def test_multiscale_adaptive_matches_torchvision():
    rng = np.random.default_rng(15)
    sizes = [32, 16, 8, 4]
    features = [rng.normal(size=(s, s, 2)).astype(np.float32) for s in sizes]
    centre = rng.uniform(0, 128, size=(80, 2))
    side = np.exp(rng.uniform(np.log(4), np.log(400), size=(80, 2)))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], 1).astype(np.float32)
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 5, -1)
    maps = {f"p{i + 2}": torch.from_numpy(f).permute(2, 0, 1)[None] for i, f in enumerate(features)}
    ref = pooler(maps, [torch.from_numpy(boxes)], [(128, 128)]).permute(0, 2, 3, 1).numpy()
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    levels = np.asarray(ops.fpn_levels(boxes, min_level=2, max_level=5))
    grid = np.stack([ops.adaptive_sampling_grid(boxes, 5, spatial_scale=s) for s in scales])
    cap = int(grid[levels, np.arange(80)].max())  # the largest grid on the RoIs' own levels
    assert cap >= 4
    out = jax.jit(
        lambda fs, b: ops.multiscale_roi_align(
            fs, b, 5, scales=scales, sampling_ratio=-1, max_sampling_ratio=cap
        )
    )(features, boxes)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # The adaptive grid really varies: the same call at a fixed ratio differs.
    fixed = ops.multiscale_roi_align(features, boxes, 5, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32])
    assert np.abs(np.asarray(fixed) - ref).max() > 1e-2
