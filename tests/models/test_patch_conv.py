"""PatchConv equals nn.Conv (values, gradients, parameters) for the first-layer shapes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.patch_conv import PatchConv


@pytest.mark.parametrize(
    "size, kernel, stride, pad, bias",
    [((13, 9), 3, 1, 100, True), ((12, 17), 7, 2, 3, False), ((8, 8), 3, 2, 0, True)],
)
def test_patch_conv_equals_nn_conv(size, kernel, stride, pad, bias):
    settings = dict(
        features=5,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=bias,
    )
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32))
    reference = nn.Conv(**settings)
    variables = reference.init(jax.random.key(0), x)
    if bias:
        variables = {"params": {**variables["params"], "bias": jnp.arange(5.0)}}
    patch = PatchConv(**settings)
    assert jax.tree.map(jnp.shape, patch.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, variables
    )

    def loss(module):
        return lambda v, x: jnp.sin(module.apply(v, x)).sum()

    np.testing.assert_allclose(
        patch.apply(variables, x), reference.apply(variables, x), rtol=1e-5, atol=1e-5
    )
    got = jax.grad(loss(patch), argnums=(0, 1))(variables, x)
    expected = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_patch_conv_rejects_a_kernel_larger_than_the_input():
    with pytest.raises(ValueError, match="does not fit"):
        PatchConv(features=2, kernel_size=(7, 7)).init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
