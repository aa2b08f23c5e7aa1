"""PatchConv equals nn.Conv (values, gradients, parameters) for the first-layer shapes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.patch_conv import PatchConv, patch_matmul, valid_conv


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


@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1)])
def test_the_accelerator_convolution_equals_the_patch_matmul(strides):
    # PatchConv runs patch_matmul on CPU and valid_conv on GPU / TPU: same values, same
    # gradients.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 13, 11, 3)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 5)).astype(np.float32))
    a, b = patch_matmul(x, kernel, strides=strides), valid_conv(x, kernel, strides=strides)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(rng.normal(size=a.shape).astype(np.float32))

    def grads(fn):
        return jax.grad(lambda x, k: jnp.sum(fn(x, k, strides=strides) * weights), (0, 1))(
            x, kernel
        )

    for g, h in zip(grads(patch_matmul), grads(valid_conv), strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)


def test_patch_conv_lowers_to_a_convolution_off_cpu():
    layer = PatchConv(features=4, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    params = jax.eval_shape(layer.init, jax.random.key(0), x)

    def lowered(platform):
        return jax.export.export(jax.jit(layer.apply), platforms=[platform])(params, x)

    assert "stablehlo.convolution" not in lowered("cpu").mlir_module()
    assert "stablehlo.convolution" in lowered("cuda").mlir_module()
