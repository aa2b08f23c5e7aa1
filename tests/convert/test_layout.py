"""Tensor layouts: each conversion against the torch layer it stands for."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxseg.convert.layout import (
    conv_kernel,
    convert_tensor,
    linear_as_conv_kernel,
    linear_kernel,
    linear_on_hwc_kernel,
    patch_kernel,
    transposed_conv_kernel,
)
from jaxseg.models.mask_head import ConvTranspose2x2


def _nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def test_conv_kernel_matches_torch_conv():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, (3, 2), padding=(1, 0), bias=False)
    x = torch.randn(2, 3, 7, 6)
    kernel = conv_kernel(layer.weight.detach().numpy())
    assert kernel.shape == (3, 2, 3, 5)
    got = jax.lax.conv_general_dilated(
        _nhwc(x), kernel, (1, 1), ((1, 1), (0, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(got, _nhwc(layer(x).detach()), rtol=1e-5, atol=1e-5)


def test_linear_kernel_matches_torch_linear():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    x = torch.randn(3, 6)
    got = x.numpy() @ linear_kernel(layer.weight.detach().numpy()) + layer.bias.detach().numpy()
    np.testing.assert_allclose(got, layer(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_linear_on_flattened_map_is_a_valid_conv():
    # VGG's fc6: a Linear on pool5 flattened in torch's C, H, W order.
    torch.manual_seed(0)
    channels, height, width = 4, 3, 2
    layer = torch.nn.Linear(channels * height * width, 5)
    x = torch.randn(2, channels, height, width)
    kernel = linear_as_conv_kernel(layer.weight.detach().numpy(), height, width)
    assert kernel.shape == (height, width, channels, 5)
    got = jax.lax.conv_general_dilated(
        _nhwc(x), kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    want = (layer(x.flatten(1)) - layer.bias).detach().numpy()
    np.testing.assert_allclose(got[:, 0, 0], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="5x5"):
        linear_as_conv_kernel(layer.weight.detach().numpy(), 5, 5)


def test_linear_on_a_channels_last_flattened_map():
    # Mask R-CNN's box head fc6: torch flattens RoI features C, H, W; jaxseg H, W, C.
    torch.manual_seed(0)
    channels, height, width = 3, 4, 2
    layer = torch.nn.Linear(channels * height * width, 5, bias=False)
    x = torch.randn(6, channels, height, width)
    kernel = linear_on_hwc_kernel(layer.weight.detach().numpy(), height, width)
    got = _nhwc(x).reshape(6, -1) @ kernel
    np.testing.assert_allclose(got, layer(x.flatten(1)).detach().numpy(), rtol=1e-5, atol=1e-6)
    converted = convert_tensor(layer.weight.detach().numpy(), kernel.shape, "hwc_kernel:4x2")
    np.testing.assert_array_equal(converted, kernel)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_transposed_kernel_matches_torch_conv_transpose(size):
    # The mask head's 2x2 stride-2 upsampling, and kernels that overlap.
    torch.manual_seed(size)
    layer = torch.nn.ConvTranspose2d(3, 4, size, stride=2, bias=False)
    x = torch.randn(2, 3, 5, 6)
    kernel = transposed_conv_kernel(layer.weight.detach().numpy())
    flax_layer = nn.ConvTranspose(4, (size, size), strides=(2, 2), padding="VALID", use_bias=False)
    got = flax_layer.apply({"params": {"kernel": jnp.asarray(kernel)}}, _nhwc(x))
    np.testing.assert_allclose(got, _nhwc(layer(x).detach()), rtol=1e-5, atol=1e-5)


def test_patch_kernel_matches_torch_conv_transpose_in_the_mask_head_layer():
    # Mask R-CNN's conv5_mask: jaxseg computes the 2x2 stride-2 transposed conv as a matmul.
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(3, 4, 2, stride=2)
    x = torch.randn(2, 3, 5, 6)
    weight = layer.weight.detach().numpy()
    kernel = convert_tensor(weight, (2, 2, 3, 4), "patch_kernel")
    np.testing.assert_array_equal(kernel, patch_kernel(weight))
    variables = {"params": {"kernel": kernel, "bias": layer.bias.detach().numpy()}}
    got = ConvTranspose2x2(features=4).apply(variables, jnp.asarray(_nhwc(x)))
    np.testing.assert_allclose(got, _nhwc(layer(x).detach()), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(kernel, transposed_conv_kernel(weight))  # no flip here


def test_convert_tensor_dispatch_and_errors():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(5, 3, 2, 2))
    assert convert_tensor(conv, (2, 2, 3, 5), "kernel").shape == (2, 2, 3, 5)
    assert convert_tensor(rng.normal(size=(4, 6)), (6, 4), "kernel").shape == (6, 4)
    assert convert_tensor(rng.normal(size=(4, 12)), (2, 2, 3, 4), "kernel").shape == (2, 2, 3, 4)
    assert convert_tensor(conv, (2, 2, 5, 3), "transposed_kernel").shape == (2, 2, 5, 3)
    vector = rng.normal(size=7)
    assert convert_tensor(vector, (7,), "vector") is vector
    with pytest.raises(ValueError, match=r"\(5, 3, 2, 2\)"):
        convert_tensor(conv, (10, 3), "kernel")
