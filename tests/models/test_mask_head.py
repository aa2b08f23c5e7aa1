"""The mask head's fast paths: one class's logits, and the 3x3 conv's custom gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.mask_head import Conv3x3, ConvTranspose2x2, MaskHead, conv3x3


def test_one_class_logits_equal_the_full_logits_of_that_class():
    x = np.random.default_rng(0).normal(size=(5, 14, 14, 4)).astype(np.float32)
    classes = jnp.array([0, 2, 1, 2, 0])
    head = MaskHead(num_classes=3, channels=6)
    variables = head.init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # biases not all zero
    full = head.apply(variables, x)  # [R, 28, 28, 3]
    one = head.apply(variables, x, classes)
    assert one.shape == (5, 28, 28)
    want = jnp.take_along_axis(full, classes[:, None, None, None], axis=-1)[..., 0]
    np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-5)  # summation order only


class _WithNNConv(nn.Module):
    """The head as it was built with `nn.Conv` for the last layer (the old layout)."""

    @nn.compact
    def __call__(self, x):
        for i in range(4):
            x = nn.relu(Conv3x3(features=6, name=f"mask_fcn{i + 1}")(x))
        x = nn.relu(ConvTranspose2x2(features=6, name="conv5_mask")(x))
        init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
        return nn.Conv(3, (1, 1), kernel_init=init, name="mask_fcn_logits")(x)


def test_the_parameters_are_those_of_the_nn_conv_layout():
    """Checkpoints and converted weights keep their names, shapes and initial values."""
    x = jnp.zeros((2, 14, 14, 4))
    params = MaskHead(num_classes=3, channels=6).init(jax.random.key(0), x)["params"]
    old = _WithNNConv().init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(old)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(old), strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv3x3_gradients_equal_lax_conv_s():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 7, 6, 4)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))
    weights = jnp.asarray(rng.normal(size=(3, 7, 6, 5)).astype(np.float32))

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    np.testing.assert_allclose(conv3x3(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-5)
    got = jax.grad(lambda x, k: jnp.sum(conv3x3(x, k) * weights), argnums=(0, 1))(x, kernel)
    want = jax.grad(lambda x, k: jnp.sum(reference(x, k) * weights), argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_conv3x3_differentiates_by_shifted_matmuls_on_cpu_only():
    # Lowered for another platform (no device needed), the gradient is lax.conv's own: the
    # nine shifted matmuls (dot_general) would cost HBM traffic on GPU / TPU.
    x = jax.ShapeDtypeStruct((2, 5, 5, 4), jnp.float32)
    kernel = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)

    def grads(x, kernel):
        return jax.grad(lambda x, k: jnp.sum(conv3x3(x, k)), argnums=(0, 1))(x, kernel)

    def lowered(platform):
        return jax.export.export(jax.jit(grads), platforms=[platform])(x, kernel).mlir_module()

    assert "stablehlo.dot_general" in lowered("cpu")
    assert "stablehlo.dot_general" not in lowered("cuda")
    assert "stablehlo.convolution" in lowered("cuda")
