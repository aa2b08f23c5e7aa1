"""Bilinear upsampling: Caffe's kernel, the transposed convolution, torch's interpolate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.upsampling import (
    BilinearUpsample,
    bilinear_kernel,
    conv_transpose,
    deconv_matrix,
    resize_bilinear,
    resize_matrix,
)


def _caffe_upsample_filt(size):
    """The FCN reference's `surgery.upsample_filt`, verbatim."""
    factor = (size + 1) // 2
    if size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 16, 32, 64])
def test_bilinear_kernel_is_caffe_upsample_filt(size):
    np.testing.assert_array_equal(bilinear_kernel(size), _caffe_upsample_filt(size))


@pytest.mark.parametrize(("stride", "k"), [(2, 4), (3, 5), (8, 16), (1, 3)])
def test_conv_transpose_matches_torch(stride, k):
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 3, 2)).astype(np.float32)  # not symmetric: checks the flip
    layer = torch.nn.ConvTranspose2d(3, 2, k, stride=stride, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(kernel.transpose(2, 3, 0, 1)))
        expected = layer(torch.from_numpy(x.transpose(0, 3, 1, 2))).permute(0, 2, 3, 1).numpy()
    got = conv_transpose(x, kernel, stride=stride)
    assert got.shape == (2, (5 - 1) * stride + k, (4 - 1) * stride + k, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_learnable_starts_diagonal_bilinear_and_equals_fixed(factor):
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
    learnable = BilinearUpsample(factor=factor, learnable=True)
    variables = learnable.init(jax.random.key(1), x)
    kernel = np.asarray(variables["params"]["kernel"])
    assert kernel.shape == (2 * factor, 2 * factor, 4, 4)
    for c in range(4):
        for o in range(4):
            expected = bilinear_kernel(2 * factor) if c == o else np.zeros((2 * factor,) * 2)
            np.testing.assert_array_equal(kernel[:, :, c, o], expected)
    fixed = BilinearUpsample(factor=factor)
    assert fixed.init(jax.random.key(1), x) == {}
    for offset, size in [(0, None), (factor - 1, (2 * factor + 1, 3 * factor - 1))]:
        want = learnable.apply(variables, x, offset=offset, size=size)
        got = fixed.apply({}, x, offset=offset, size=size)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_transposed_conv_interpolates_in_the_interior(factor):
    """Output pixel p samples the input at (p + 0.5) / f - 1 (input pixel i at coordinate i)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    y = np.asarray(BilinearUpsample(factor=factor).apply({}, x))
    coords = (np.arange(y.shape[1]) + 0.5) / factor - 1.0
    rows = np.nonzero((coords >= 0) & (coords <= 3))[0]
    cols = np.nonzero((coords[: y.shape[2]] >= 0) & (coords[: y.shape[2]] <= 4))[0]
    assert len(rows) == 3 * factor and len(cols) == 4 * factor
    for c in range(2):
        # Separable linear interpolation with np.interp, along W then H.
        along_w = np.stack([np.interp(coords[cols], np.arange(5), x[0, i, :, c]) for i in range(4)])
        expected = np.stack(
            [np.interp(coords[rows], np.arange(4), along_w[:, j]) for j in range(len(cols))], 1
        )
        np.testing.assert_allclose(y[0][np.ix_(rows, cols)][..., c], expected, atol=1e-5)


def test_learnable_kernel_gets_gradients_and_fixed_has_none():
    x = jax.random.normal(jax.random.key(0), (1, 3, 3, 2))
    target = jax.random.normal(jax.random.key(1), (1, 8, 8, 2))
    for learnable in (True, False):
        model = BilinearUpsample(factor=2, learnable=learnable)
        params = model.init(jax.random.key(2), x).get("params", {})

        def loss(params, x, model=model):
            return jnp.sum((model.apply({"params": params}, x) - target) ** 2)

        grads, x_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
        assert float(jnp.abs(x_grad).max()) > 0
        if learnable:
            assert float(jnp.abs(grads["kernel"]).max()) > 0
        else:
            assert grads == {}


def test_bilinear_transposed_conv_is_half_pixel_resize_shifted_by_half_a_factor():
    x = jax.random.normal(jax.random.key(2), (1, 6, 6, 1))
    f = 8
    y = BilinearUpsample(factor=f).apply({}, x)[0, f // 2 : f // 2 + 6 * f, f // 2 : f // 2 + 6 * f]
    resized = jax.image.resize(x, (1, 6 * f, 6 * f, 1), "bilinear")[0]
    interior = slice(f // 2, 6 * f - f // 2)
    np.testing.assert_allclose(y[interior, interior], resized[interior, interior], atol=1e-5)


def test_deconv_matrix_rejects_crops_outside():
    assert deconv_matrix(3, factor=2).shape == (8, 3)
    with pytest.raises(ValueError, match="outside"):
        deconv_matrix(3, factor=2, offset=5, out_size=4)
    with pytest.raises(ValueError, match="does not fit"):
        BilinearUpsample(factor=2).apply({}, jnp.zeros((1, 3, 3, 1)), offset=5, size=(4, 4))


@pytest.mark.parametrize(
    ("in_size", "out_size"), [(9, 65), (6, 47), (3, 7), (13, 4), (65, 9), (33, 520), (1, 5), (5, 1)]
)
def test_resize_matrix_is_torch_weights(in_size, out_size):
    import torch

    # Column n of torch's weights: resize the one-hot image e_n (C = 1, W = 1).
    eye = torch.eye(in_size).reshape(in_size, 1, in_size, 1)
    torch_weights = torch.nn.functional.interpolate(
        eye, size=(out_size, 1), mode="bilinear", align_corners=False
    )
    np.testing.assert_array_equal(
        resize_matrix(in_size, out_size), torch_weights[:, 0, :, 0].T.numpy()
    )


@pytest.mark.parametrize(
    ("size", "new_size"),
    [((9, 6), (65, 47)), ((1, 1), (3, 2)), ((65, 47), (9, 6)), ((5, 7), (5, 7))],
)
def test_resize_bilinear_matches_torch_interpolate(size, new_size):
    import torch

    x = np.random.default_rng(3).normal(size=(2, 3, *size)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=new_size, mode="bilinear", align_corners=False
    )
    got = jax.jit(resize_bilinear, static_argnums=1)(x.transpose(0, 2, 3, 1), new_size)
    # Same weights; only the float32 summation order differs (a few ulp).
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), rtol=0, atol=2e-6)


def test_resize_bilinear_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        resize_bilinear(jnp.zeros((4, 4)), (8, 8))
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(jnp.zeros((1, 4, 4, 1)), (0, 8))
