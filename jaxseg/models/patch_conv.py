"""`PatchConv`: a convolution over an image's few input channels, as one matrix product.

XLA:CPU computes the kernel gradient of a convolution with 3 input channels very slowly:
measured on 2 CPU cores for the FCN's conv1_1 (3 -> 64 channels, 3x3, a 500 px image
padded by 100), the backward pass took 17.5 s as `lax.conv` and 1.3-2.0 s as a matrix
product over the image's patches, which is what this layer computes. Its parameters are
shaped and named like `nn.Conv`'s (`kernel [kh, kw, C, features]`, `bias [features]`), so
checkpoints and converted weights do not change. Meant for the first layer of a network,
where the patches (kh * kw * C values a pixel) are few. On GPU and TPU it is `lax.conv`
(decided at lowering time, as in `jaxseg.ops.nms`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["PatchConv", "patch_matmul", "valid_conv"]


class PatchConv(nn.Module, kw_only=True):
    """Returns `[B, H', W', features]`: the convolution of `x [B, H, W, C]`, as `nn.Conv`.

    Attributes:
      features: output channels.
      kernel_size: `(kh, kw)`.
      strides: `(sy, sx)`.
      padding: `((top, bottom), (left, right))` zero padding, pixels.
      use_bias: add a `bias` parameter.
      kernel_init, bias_init: initialisers of `kernel` and `bias`.
      dtype: compute dtype; parameters stay float32.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    use_bias: bool = True
    kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., jax.Array] = nn.initializers.zeros
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        x = jnp.pad(jnp.asarray(x, self.dtype), ((0, 0), *self.padding, (0, 0)))
        _, height, width, _ = x.shape
        if height < kh or width < kw:
            raise ValueError(
                f"PatchConv: a {kh}x{kw} kernel does not fit the padded input {x.shape[1:3]}"
            )
        kernel = kernel.astype(self.dtype)
        # The matmul is for XLA:CPU; on GPU and TPU the patches would be kh * kw copies of
        # the image in memory, which their convolutions do not make.
        y = jax.lax.platform_dependent(
            x,
            kernel,
            cpu=functools.partial(patch_matmul, strides=self.strides),
            default=functools.partial(valid_conv, strides=self.strides),
        )
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(self.dtype)
        return y


def patch_matmul(x: jax.Array, kernel: jax.Array, *, strides: tuple[int, int]) -> jax.Array:
    """The 'VALID' convolution of x [B, H, W, C] by kernel [kh, kw, C, O], as one matmul."""
    kh, kw, _, features = kernel.shape
    sy, sx = strides
    _, height, width, _ = x.shape
    out_h, out_w = (height - kh) // sy + 1, (width - kw) // sx + 1
    # Patch values in (dy, dx, c) order, the row order of the kernel as a matrix.
    patches = jnp.concatenate(
        [
            x[:, dy : dy + sy * (out_h - 1) + 1 : sy, dx : dx + sx * (out_w - 1) + 1 : sx]
            for dy in range(kh)
            for dx in range(kw)
        ],
        axis=-1,
    )
    return patches @ kernel.reshape(-1, features)


def valid_conv(x: jax.Array, kernel: jax.Array, *, strides: tuple[int, int]) -> jax.Array:
    """The same convolution as `patch_matmul`, by `lax.conv`."""
    return jax.lax.conv_general_dilated(
        x, kernel, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
