"""The Mask R-CNN mask head: four 3x3 convs, a 2x transposed conv, per-class mask logits.

Names map onto torchvision's `roi_heads.mask_head.{0..3}.0` (`mask_fcn1..4` here) and
`roi_heads.mask_predictor.{conv5_mask, mask_fcn_logits}`; conv kernels are
`weight.permute(2, 3, 1, 0)`, the transposed conv's kernel [kh, kw, in, out] is torch's
[in, out, kh, kw] permuted (2, 3, 0, 1) (tested against torchvision).

The head runs on many small maps (R x 14 x 14), where XLA:CPU's convolution gradients are
slow: measured on 2 CPU cores for 256 RoIs of 256 channels, one 3x3 conv forward + backward
took 7.2 s as `lax.conv` and 2.3 s as nine shifted matmuls, the 2x2 stride-2 transposed conv
28.6 s as `nn.ConvTranspose` and 0.75 s as one matmul. Both are written as matmuls here (the
same numbers; the parameters are shaped like `nn.Conv` / `nn.ConvTranspose`'s).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), bias 0.
_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv3x3(nn.Module, kw_only=True):
    """Returns the 'same'-padded 3x3 convolution [R, H, W, features] of x [R, H, W, C].

    Nine shifted matmuls; parameters `kernel [3, 3, C, features]`, `bias [features]`.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _INIT, (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        _, height, width, _ = x.shape
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = bias.astype(self.dtype)
        for dy in range(3):
            for dx in range(3):
                window = padded[:, dy : dy + height, dx : dx + width]  # [R, H, W, C]
                out = out + jnp.einsum("rhwc,co->rhwo", window, kernel[dy, dx])
        return out


class ConvTranspose2x2(nn.Module, kw_only=True):
    """Returns [R, 2H, 2W, features]: the kernel-2, stride-2 transposed conv of [R, H, W, C].

    Output pixel (2i + a, 2j + b) is `x[i, j] @ kernel[a, b] + bias` (the kernels do not
    overlap, so this is one matmul); parameters `kernel [2, 2, C, features]`, `bias`.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _INIT, (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        rois, height, width, _ = x.shape
        y = jnp.einsum("rijc,abco->riajbo", x.astype(self.dtype), kernel.astype(self.dtype))
        y = y.reshape(rois, 2 * height, 2 * width, self.features)  # [R, 2H, 2W, features]
        return y + bias.astype(self.dtype)


class MaskHead(nn.Module, kw_only=True):
    """Returns mask logits [R, 2 * S, 2 * S, K + 1] float32 of pooled features [R, S, S, C].

    Attributes:
      num_classes: K + 1, background included (torchvision's `num_classes`).
      channels: of the four convs and the transposed conv (256).
      num_convs: 4.
      dtype: compute dtype.
    """

    num_classes: int
    channels: int = 256
    num_convs: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [R, 14, 14, C] RoI features; returns [R, 28, 28, K + 1]."""
        for i in range(self.num_convs):
            x = nn.relu(
                Conv3x3(features=self.channels, dtype=self.dtype, name=f"mask_fcn{i + 1}")(x)
            )
        x = nn.relu(
            ConvTranspose2x2(features=self.channels, dtype=self.dtype, name="conv5_mask")(x)
        )
        x = nn.Conv(
            self.num_classes, (1, 1), kernel_init=_INIT, dtype=self.dtype, name="mask_fcn_logits"
        )(x)
        return x.astype(jnp.float32)
