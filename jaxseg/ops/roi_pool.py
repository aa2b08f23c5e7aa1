"""RoIPool: quantised max pooling of RoIs (Fast R-CNN), kept for comparison with RoIAlign.

RoIPool rounds each RoI corner to the feature grid and splits the rounded RoI into bins
whose edges are rounded again (floor for starts, ceil for ends). Both roundings shift the
pooled window by up to a feature pixel: at stride 16 that is 16 input pixels, the loss of
mask precision that RoIAlign removes.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.ops.roi_align import (
    assign_levels,
    check_features,
    check_rois,
    normalize_output_size,
)


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's `round`: halves go away from zero (jnp.round goes to even)."""
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _bin_edges(start: jax.Array, length: jax.Array, bins: int, size: int):
    """Returns ([bins] starts, [bins] ends) of the bins along one axis, clipped to [0, size].

    Bin p spans [floor(p * length / bins), ceil((p + 1) * length / bins)) from `start`,
    computed in integers so that no float reciprocal moves an edge.
    """
    p = jnp.arange(bins, dtype=jnp.int32)
    lo = (p * length) // bins
    hi = -((-(p + 1) * length) // bins)
    return jnp.clip(lo + start, 0, size), jnp.clip(hi + start, 0, size)


def _pool_one_roi(
    features: jax.Array, box: jax.Array, *, output_size: tuple[int, int], spatial_scale: float
) -> jax.Array:
    """Returns [oh, ow, C]: the max over each bin of one RoI (0 for an empty bin)."""
    height, width, _ = features.shape
    out_h, out_w = output_size
    x1, y1, x2, y2 = _round_half_away(box * spatial_scale).astype(jnp.int32)
    roi_w = jnp.maximum(x2 - x1 + 1, 1)
    roi_h = jnp.maximum(y2 - y1 + 1, 1)
    h_lo, h_hi = _bin_edges(y1, roi_h, out_h, height)
    w_lo, w_hi = _bin_edges(x1, roi_w, out_w, width)
    rows = jnp.arange(height)
    cols = jnp.arange(width)
    in_row = (rows[None, :] >= h_lo[:, None]) & (rows[None, :] < h_hi[:, None])  # [oh, H]
    in_col = (cols[None, :] >= w_lo[:, None]) & (cols[None, :] < w_hi[:, None])  # [ow, W]
    bin_max = _bin_max(features, in_row, in_col)  # [oh, ow, C]
    empty = (h_hi <= h_lo)[:, None] | (w_hi <= w_lo)[None, :]  # [oh, ow]
    return jnp.where(empty[..., None], jnp.zeros_like(bin_max), bin_max)


@jax.custom_vjp
def _bin_max(features: jax.Array, in_row: jax.Array, in_col: jax.Array) -> jax.Array:
    """Returns [oh, ow, C]: the max of `features` [H, W, C] over each bin's rows and columns.

    in_row: [oh, H] and in_col: [ow, W] bool, the rows and columns of each bin. A bin with no
    value above -FLT_MAX (torchvision's start) gives -FLT_MAX.
    """
    lowest = jnp.finfo(features.dtype).min
    # The max is separable: over the columns of each bin first, then over its rows.
    col_max = jnp.max(
        jnp.where(in_col[None, :, :, None], features[:, None, :, :], lowest), axis=2
    )  # [H, ow, C]
    return jnp.max(
        jnp.where(in_row[:, :, None, None], col_max[None, :, :, :], lowest), axis=1
    )  # [oh, ow, C]


def _bin_max_fwd(features, in_row, in_col):
    bin_max = _bin_max(features, in_row, in_col)
    return bin_max, (features, in_row, in_col, bin_max)


def _bin_max_bwd(residuals, cotangent):
    """Sends each bin's cotangent to its first maximum in torchvision's scan order (rows,
    then columns), not spread over tied maxima as a max's derivative would (ReLU maps tie
    often, at 0)."""
    features, in_row, in_col, bin_max = residuals
    height, width, channels = features.shape
    lowest = jnp.finfo(features.dtype).min
    col_max = jnp.max(
        jnp.where(in_col[None, :, :, None], features[:, None, :, :], lowest), axis=2
    )  # [H, ow, C]
    # The first column holding each row's maximum, then the first row holding the bin's:
    # together the first maximum in scan order. Minimum of indices, not argmax: plain
    # reductions, which XLA vectorises.
    cols = jnp.arange(width)[None, None, :, None]
    first_col = jnp.min(
        jnp.where(
            in_col[None, :, :, None] & (features[:, None, :, :] == col_max[:, :, None, :]),
            cols,
            width,
        ),
        axis=2,
    )  # [H, ow, C]
    rows = jnp.arange(height)[None, :, None, None]
    first_row = jnp.min(
        jnp.where(in_row[:, :, None, None] & (col_max[None] == bin_max[:, None]), rows, height),
        axis=1,
    )  # [oh, ow, C]
    row = jnp.minimum(first_row, height - 1)
    out_w = in_col.shape[0]
    col = first_col[row, jnp.arange(out_w)[None, :, None], jnp.arange(channels)]  # [oh, ow, C]
    # torchvision takes only values above -FLT_MAX: a bin without any has no gradient.
    found = bin_max > lowest
    d_features = (
        jnp.zeros(features.shape, jnp.result_type(features.dtype, jnp.float32))
        .at[row, jnp.minimum(col, width - 1), jnp.arange(channels)]
        .add(jnp.where(found, cotangent, 0.0))
        .astype(features.dtype)
    )
    return d_features, None, None


_bin_max.defvjp(_bin_max_fwd, _bin_max_bwd)


def roi_pool(
    features: ArrayLike,
    boxes: ArrayLike,
    output_size: int | Sequence[int],
    *,
    spatial_scale: float = 1.0,
) -> jax.Array:
    """Returns [R, oh, ow, C]: each RoI of `boxes` max-pooled from `features` on a rounded grid.

    Args:
      features: [H, W, C] one image's feature map, channels last.
      boxes: [R, 4] xyxy in input pixels.
      output_size: oh and ow, an int or a pair.
      spatial_scale: feature pixels per input pixel.

    Same numbers as `torchvision.ops.roi_pool` (NCHW transposed to NHWC): corners rounded
    half away from zero, RoI sizes `max(x2 - x1 + 1, 1)`, bins floor/ceil, empty bins 0.
    Gradients flow to the maximum of each bin, all to the first one in scan order where
    several tie (torchvision's argmax; ReLU maps tie often, at 0). Cost O(R * H * W * ow * C):
    every RoI scans the whole map with masks, which keeps shapes static.
    """
    features, boxes = jnp.asarray(features), jnp.asarray(boxes)
    check_features(features)
    check_rois(boxes)
    output_size = normalize_output_size(output_size)
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0, got {spatial_scale!r}")
    boxes = boxes.astype(jnp.result_type(features.dtype, jnp.float32))
    return jax.vmap(
        lambda box: _pool_one_roi(
            features, box, output_size=output_size, spatial_scale=spatial_scale
        )
    )(boxes)


def multiscale_roi_pool(
    features_per_level: Sequence[ArrayLike],
    boxes: ArrayLike,
    output_size: int | Sequence[int],
    *,
    scales: Sequence[float],
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> jax.Array:
    """Returns [R, oh, ow, C]: each RoI max-pooled by `roi_pool` from its FPN level.

    The RoIPool counterpart of `multiscale_roi_align`, with the same level assignment; every
    level is pooled for every RoI and the assigned one selected (L times the work).
    """
    levels = [jnp.asarray(f) for f in features_per_level]
    boxes = jnp.asarray(boxes)
    level = assign_levels(
        levels, boxes, scales, canonical_scale=canonical_scale, canonical_level=canonical_level
    )
    pooled = jnp.stack(
        [
            roi_pool(f, boxes, output_size, spatial_scale=s)
            for f, s in zip(levels, scales, strict=True)
        ]
    )  # [L, R, oh, ow, C]
    return jnp.take_along_axis(pooled, level[None, :, None, None, None], axis=0)[0]
