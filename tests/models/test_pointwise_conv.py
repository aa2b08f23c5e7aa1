"""PointwiseConv is nn.Conv(features, (1, 1)): same parameters, same initial values, same
outputs, strided or not."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.pointwise_conv import PointwiseConv


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("side", [8, 7])
def test_equals_nn_conv(strides, use_bias, side):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, side, side, 5)).astype(np.float32))
    init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    ours = PointwiseConv(
        features=6,
        strides=strides,
        use_bias=use_bias,
        kernel_init=init,
        bias_init=nn.initializers.normal(1.0),
    )
    reference = nn.Conv(
        6,
        (1, 1),
        strides=strides,
        use_bias=use_bias,
        kernel_init=init,
        bias_init=nn.initializers.normal(1.0),
    )
    params = ours.init(jax.random.key(0), x)
    want_params = reference.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(want_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want_params), strict=True):
        np.testing.assert_array_equal(a, b)
    got = ours.apply(params, x)
    want = reference.apply(params, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_compute_dtype():
    x = jnp.ones((1, 4, 4, 3))
    layer = PointwiseConv(features=2, dtype=jnp.bfloat16)
    params = layer.init(jax.random.key(0), x)
    assert params["params"]["kernel"].dtype == jnp.float32
    assert layer.apply(params, x).dtype == jnp.bfloat16
