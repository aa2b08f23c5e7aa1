"""Bilinear upsampling: the FCN's transposed convolutions and torchvision's `F.interpolate`.

Two different bilinear upsamplers live here because the two FCN families use different ones:

- The paper's VGG16 FCN upsamples with a *transposed convolution* (Caffe `Deconvolution`,
  no padding) whose kernel is initialised to bilinear interpolation (`bilinear_kernel`),
  then crops. `BilinearUpsample` is that layer, fixed (no parameters) or learnable.
- torchvision's `fcn_resnet50` resizes its logits with
  `F.interpolate(mode='bilinear', align_corners=False)`; `resize_bilinear` is that, to the
  last rounding step of the interpolation weights.

Fixed upsamplers are written as two small matrix products per image (`A_h @ x @ A_w^T`, the
interpolation being separable): exact, deterministic in the backward pass, and far cheaper
than a dense transposed convolution over K x K channels.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "BilinearUpsample",
    "bilinear_kernel",
    "conv_transpose",
    "deconv_matrix",
    "resize_bilinear",
    "resize_matrix",
]

# Interpolation matrices hold exact weights; keep the contraction in full float32 on
# accelerators too (TF32 / bf16 passes would change the numbers, and these matmuls are cheap).
_HIGHEST = jax.lax.Precision.HIGHEST


def bilinear_kernel(size: int) -> np.ndarray:
    """Returns the Caffe FCN `upsample_filt(size)`: a `[size, size]` bilinear kernel.

    For the even sizes the FCNs use (size = 2 * factor) this is the outer product of the
    1-D tent `1 - |k - (factor - 0.5)| / factor`, k in [0, size).
    """
    taps = _tent(size)  # [size]
    return np.outer(taps, taps)


def _tent(size: int) -> np.ndarray:
    """Returns `[size]`: the 1-D factor of `bilinear_kernel(size)`."""
    if size < 1:
        raise ValueError(f"bilinear kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1.0 - np.abs(np.arange(size) - center) / factor


def conv_transpose(x: ArrayLike, kernel: ArrayLike, *, stride: int) -> jax.Array:
    """Returns the full transposed convolution of `x` (Caffe `Deconvolution` with no padding).

    Args:
      x: `[B, H, W, C]` input.
      kernel: `[k, k, C, C']`, scattered as
        `y[b, s*i + u, s*j + v, o] += x[b, i, j, c] * kernel[u, v, c, o]`
        (torch `ConvTranspose2d.weight[c, o, u, v]` transposed to `(2, 3, 0, 1)`).
      stride: s.

    Returns:
      `[B, (H - 1) * s + k, (W - 1) * s + k, C']`.
    """
    x = jnp.asarray(x)
    kernel = jnp.asarray(kernel)
    k = kernel.shape[0]
    # A transposed convolution is a correlation of the stride-dilated input with the
    # spatially flipped kernel, padded by k - 1 on every side.
    return jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1],
        window_strides=(1, 1),
        padding=((k - 1, k - 1), (k - 1, k - 1)),
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def deconv_matrix(
    in_size: int, *, factor: int, offset: int = 0, out_size: int | None = None
) -> np.ndarray:
    """Returns `[out_size, in_size]`: 1-D bilinear transposed convolution, then a crop.

    Row p is output pixel `offset + p` of the transposed convolution with stride `factor`
    and the 1-D tent of `bilinear_kernel(2 * factor)`; by default the whole output,
    `(in_size - 1) * factor + 2 * factor` pixels.
    """
    size = 2 * factor
    full = (in_size - 1) * factor + size
    out_size = full - offset if out_size is None else out_size
    if offset < 0 or offset + out_size > full:
        raise ValueError(
            f"deconv_matrix: crop [{offset}, {offset + out_size}) lies outside the "
            f"{full} pixels upsampled from {in_size}"
        )
    taps = _tent(size)
    k = np.arange(offset, offset + out_size)[:, None] - factor * np.arange(in_size)[None, :]
    inside = (k >= 0) & (k < size)
    return np.where(inside, taps[np.clip(k, 0, size - 1)], 0.0).astype(np.float32)


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Returns `[out_size, in_size]` weights of torch's bilinear `align_corners=False` resize.

    Follows ATen's `upsample_bilinear2d` step by step: float32 scale `in / out`, source
    coordinate `(dst + 0.5) * scale - 0.5` rounded once to float32 (ATen's fused
    multiply-add; exact in float64 before that rounding), clamped at 0, its floor and next
    pixel (clamped at the last), float32 weights `1 - lambda` and `lambda`.
    """
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    src = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam1 = src - i0.astype(np.float32)
    lam0 = np.float32(1.0) - lam1
    rows = np.arange(out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    matrix[rows, i0] += lam0
    matrix[rows, i1] += lam1
    return matrix


def _apply_separable(x: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    """Returns `[B, P, Q, C]`: `rows [P, H]` applied along H and `cols [Q, W]` along W."""
    rows = jnp.asarray(rows, x.dtype)
    cols = jnp.asarray(cols, x.dtype)
    y = jnp.einsum("ph,bhwc->bpwc", rows, x, precision=_HIGHEST)
    return jnp.einsum("qw,bpwc->bpqc", cols, y, precision=_HIGHEST)


def resize_bilinear(x: ArrayLike, size: tuple[int, int]) -> jax.Array:
    """Returns `[B, H', W', C]`: `x [B, H, W, C]` resized to `size = (H', W')`.

    The same numbers as torch's `F.interpolate(x, size, mode='bilinear',
    align_corners=False)` (no antialiasing), up to float32 summation order. Unlike
    `jax.image.resize` it never antialiases, also when shrinking.
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"resize_bilinear: x must be [B, H, W, C], got shape {x.shape}")
    out_h, out_w = size
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize_bilinear: size must be positive, got {size}")
    return _apply_separable(x, resize_matrix(x.shape[1], out_h), resize_matrix(x.shape[2], out_w))


def _diagonal_bilinear_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """Returns a `[k, k, K, K]` kernel: `bilinear_kernel(k)` from class c to class c, else 0."""
    del key
    k, _, channels, out_channels = shape
    if channels != out_channels:
        raise ValueError(f"diagonal bilinear init needs a square kernel, got shape {shape}")
    kernel = np.zeros(shape, np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = bilinear_kernel(k)[:, :, None]
    return jnp.asarray(kernel, dtype)


class BilinearUpsample(nn.Module, kw_only=True):
    """Returns `[B, h, w, K]`: the FCN's bilinear transposed convolution, then a crop.

    Caffe `Deconvolution` with kernel `2 * factor`, stride `factor`, no padding and no
    bias, initialised to bilinear interpolation from class c to class c only. The
    reference keeps it fixed (`learnable=False`: no parameters at all, computed as exact
    separable interpolation matrices); with `learnable=True` it is a `kernel [2f, 2f, K, K]`
    parameter starting from the same values.

    Attributes:
      factor: upsampling factor f (stride).
      learnable: whether the kernel is a trainable parameter.
      dtype: compute dtype.
    """

    factor: int
    learnable: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike, *, offset: int = 0, size: tuple[int, int] | None = None):
        """Upsamples `x [B, H, W, K]` and crops `size = (h, w)` at `(offset, offset)`.

        Without `size` the whole `[(H - 1) f + 2f, (W - 1) f + 2f]` output is kept.
        """
        x = jnp.asarray(x, self.dtype)
        _, height, width, channels = x.shape
        full = ((height + 1) * self.factor, (width + 1) * self.factor)
        size = (full[0] - offset, full[1] - offset) if size is None else tuple(size)
        if offset < 0 or offset + size[0] > full[0] or offset + size[1] > full[1]:
            raise ValueError(
                f"BilinearUpsample: crop of {size} at offset {offset} does not fit the "
                f"{full} output upsampled from {(height, width)}"
            )
        if self.learnable:
            k = 2 * self.factor
            kernel = self.param("kernel", _diagonal_bilinear_init, (k, k, channels, channels))
            y = conv_transpose(x, jnp.asarray(kernel, self.dtype), stride=self.factor)
            return y[:, offset : offset + size[0], offset : offset + size[1], :]
        rows = deconv_matrix(height, factor=self.factor, offset=offset, out_size=size[0])
        cols = deconv_matrix(width, factor=self.factor, offset=offset, out_size=size[1])
        return _apply_separable(x, rows, cols)
