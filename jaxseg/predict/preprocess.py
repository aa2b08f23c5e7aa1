"""Inside the compiled predictor: uint8 content to the normalised network input.

The host (`jaxseg.serving.pack`) puts each image's content at the top-left of a uint8
canvas and says its size and the size it goes to in the network (`input_sizes`); here it
is resized bilinearly, normalised and zero-padded, all with static shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["resize_matrix", "to_network_input"]


def resize_matrix(
    in_length: ArrayLike, out_length: ArrayLike, in_size: int, out_size: int, *, antialias: bool
) -> jax.Array:
    """Returns float32 [out_size, in_size]: bilinear resize weights of a 1-D signal.

    Args:
      in_length: the signal's length inside `in_size` samples (traced scalar).
      out_length: its length after resizing, inside `out_size` (traced scalar).
      in_size, out_size: the static array lengths.
      antialias: widen the triangle kernel by the reduction factor when shrinking (PIL's
        bilinear); False is torch's `interpolate(mode='bilinear', align_corners=False)`.

    Half-pixel centres; samples past `in_length` get no weight (each row renormalised, which
    is what both PIL and torch do at the edge); rows from `out_length` on are zero.
    """
    in_length = jnp.asarray(in_length, jnp.float32)
    out_length = jnp.asarray(out_length, jnp.float32)
    ratio = in_length / jnp.maximum(out_length, 1.0)
    support = jnp.maximum(ratio, 1.0) if antialias else 1.0
    centre = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * ratio - 0.5  # [out]
    source = jnp.arange(in_size, dtype=jnp.float32)  # [in]
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(source[None, :] - centre[:, None]) / support)
    weights = jnp.where(source[None, :] < in_length, weights, 0.0)
    weights = weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return jnp.where(jnp.arange(out_size)[:, None] < out_length, weights, 0.0)


def to_network_input(
    images: ArrayLike,
    sizes: ArrayLike,
    input_sizes: ArrayLike,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    pixel_scale: float = 1 / 255,
    antialias: bool = True,
    canvas: tuple[int, int] | None = None,
) -> jax.Array:
    """Returns float32 [B, H', W', 3]: each content resized, normalised and zero-padded.

    Args:
      images: uint8 [B, H, W, 3], each image's content at the top-left.
      sizes: int32 [B, 2] (h, w) of the contents; 0 for an empty slot.
      input_sizes: int32 [B, 2] (h, w) each content is resized to, at most (H', W').
      mean, std: per-channel statistics applied after `pixel_scale` (ImageNet's).
      antialias: see `resize_matrix`.
      canvas: (H', W') of the network input; default (H, W).
    """
    images = jnp.asarray(images)
    _, in_height, in_width, _ = images.shape
    height, width = canvas or (in_height, in_width)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def one(image, size, inside):
        rows = resize_matrix(size[0], inside[0], in_height, height, antialias=antialias)
        cols = resize_matrix(size[1], inside[1], in_width, width, antialias=antialias)
        x = image.astype(jnp.float32) * pixel_scale
        x = jnp.einsum("oh,hwc->owc", rows, x, precision=jax.lax.Precision.HIGHEST)
        x = jnp.einsum("owc,pw->opc", x, cols, precision=jax.lax.Precision.HIGHEST)
        x = (x - mean) / std
        inside_rows = jnp.arange(height) < inside[0]
        inside_cols = jnp.arange(width) < inside[1]
        return jnp.where((inside_rows[:, None] & inside_cols[None, :])[..., None], x, 0.0)

    return jax.vmap(one)(images, jnp.asarray(sizes), jnp.asarray(input_sizes))
