"""The Mask R-CNN mask head: four 3x3 convs, a 2x transposed conv, per-class mask logits.

Names map onto torchvision's `roi_heads.mask_head.{0..3}.0` (`mask_fcn1..4` here) and
`roi_heads.mask_predictor.{conv5_mask, mask_fcn_logits}`; conv kernels are
`weight.permute(2, 3, 1, 0)`, the transposed conv's kernel [kh, kw, in, out] is torch's
[in, out, kh, kw] permuted (2, 3, 0, 1) (tested against torchvision).

The head runs on many small maps (R x 14 x 14), where XLA:CPU's convolution gradients are
slow: measured on 2 CPU cores for 256 RoIs of 256 channels, one 3x3 conv forward + backward
took 7.2 s as `lax.conv` and 2.3 s as nine shifted matmuls, the 2x2 stride-2 transposed conv
28.6 s as `nn.ConvTranspose` and 0.75 s as one matmul. Its forward pass, though, is about
twice as fast as `lax.conv` (100 RoIs: 0.13-0.22 s against 0.25-0.46 s for the nine matmuls,
under load 4-5), so on CPU the 3x3 conv runs forward as `lax.conv` and differentiates as the
nine matmuls (`conv3x3`, a custom VJP; plain `lax.conv` on GPU and TPU), and the transposed
conv is one matmul (the parameters are shaped like `nn.Conv` / `nn.ConvTranspose`'s either
way).

The last 1x1 conv gives each RoI the logits of every class, of which Mask R-CNN uses one (the
predicted class at inference, the ground-truth class in training); given `classes`, the
head computes only that one: 1 / (K + 1) of the layer's work (91 classes: 3.7 GFLOP of 100
detections become 0.04).
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
        out = conv3x3(x.astype(self.dtype), kernel.astype(self.dtype))
        return out + bias.astype(self.dtype)


def _shifted_matmuls(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 'same' 3x3 convolution of x [R, H, W, C] by kernel [3, 3, C, O], as nine matmuls."""
    _, height, width, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = jnp.zeros((*x.shape[:3], kernel.shape[-1]), x.dtype)
    for dy in range(3):
        for dx in range(3):
            window = padded[:, dy : dy + height, dx : dx + width]  # [R, H, W, C]
            out = out + jnp.einsum("rhwc,co->rhwo", window, kernel[dy, dx])
    return out


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Returns the 'same' 3x3 convolution [R, H, W, O] of x [R, H, W, C] by kernel [3, 3, C, O].

    On CPU, `lax.conv` forward and the gradients of `_shifted_matmuls` backward; on GPU and
    TPU, `lax.conv` both ways: there the nine shifted copies and their gradients would cost
    HBM traffic that the convolution's own gradient does not (the platform is decided at
    lowering time, as in `jaxseg.ops.nms`).
    """
    return jax.lax.platform_dependent(x, kernel, cpu=_conv3x3_cpu, default=_lax_conv3x3)


def _lax_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@jax.custom_vjp
def _conv3x3_cpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _lax_conv3x3(x, kernel)


def _conv3x3_forward(x, kernel):
    return _lax_conv3x3(x, kernel), (x, kernel)


def _conv3x3_backward(residuals, cotangent):
    # The convolution is bilinear, so the VJP needs only the inputs; XLA drops the
    # forward matmuls that `jax.vjp` traces.
    _, vjp = jax.vjp(_shifted_matmuls, *residuals)
    return vjp(cotangent)


_conv3x3_cpu.defvjp(_conv3x3_forward, _conv3x3_backward)


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
    def __call__(self, x: jax.Array, classes: jax.Array | None = None) -> jax.Array:
        """x: [R, 14, 14, C] RoI features; returns [R, 28, 28, K + 1], or with `classes`
        (int [R]) the logits [R, 28, 28] of each RoI's class only."""
        for i in range(self.num_convs):
            x = nn.relu(
                Conv3x3(features=self.channels, dtype=self.dtype, name=f"mask_fcn{i + 1}")(x)
            )
        x = nn.relu(
            ConvTranspose2x2(features=self.channels, dtype=self.dtype, name="conv5_mask")(x)
        )
        logits = ClassLogits(num_classes=self.num_classes, dtype=self.dtype, name="mask_fcn_logits")
        return logits(x, classes).astype(jnp.float32)


class ClassLogits(nn.Module, kw_only=True):
    """The 1x1 conv to per-class logits, optionally of one class per RoI.

    Parameters as `nn.Conv(num_classes, (1, 1))`'s: `kernel [1, 1, C, K + 1]`, `bias`.
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, classes: jax.Array | None = None) -> jax.Array:
        """x: [R, H, W, C]; returns [R, H, W, K + 1], or with `classes` (int [R]) [R, H, W]."""
        kernel = self.param("kernel", _INIT, (1, 1, x.shape[-1], self.num_classes))
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        x = x.astype(self.dtype)
        kernel = kernel[0, 0].astype(self.dtype)  # [C, K + 1]
        bias = bias.astype(self.dtype)
        if classes is None:
            return jnp.einsum("rhwc,ck->rhwk", x, kernel) + bias
        chosen = jnp.take(kernel, classes, axis=1).T  # [R, C]
        return jnp.einsum("rhwc,rc->rhw", x, chosen) + jnp.take(bias, classes)[:, None, None]
