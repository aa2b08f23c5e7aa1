"""RoIAlign: bilinear sampling of feature maps at exact fractional RoI positions.

Mask R-CNN replaced RoIPool's rounding with bilinear sampling: every output bin averages
`sampling_ratio x sampling_ratio` bilinear samples taken at fractional positions inside the
bin, so no RoI border or bin edge is snapped to the feature grid.

The sampler works on a *flat padded buffer*: a map [H, W, C] is padded with one row and one
column of zeros at the bottom and right and flattened to [(H + 1) * (W + 1), C]. Then each
bilinear sample needs the four rows `i, i + 1, i + W + 1, i + W + 2` of the buffer with no
bounds test: the padding is read exactly where torchvision clamps the upper neighbour, and
there it is weighted by zero. Several maps (FPN levels, instance masks) concatenate into one
buffer, so a RoI reads only the map it is assigned to, through a base offset.

Adaptive sampling (torchvision's `sampling_ratio <= 0`) gives each RoI its own grid,
`ceil(roi_height / oh) x ceil(roi_width / ow)` samples per bin. A static shape needs a bound:
every RoI gets `max_sampling_ratio**2` sample slots per bin and the slots past its own grid
weigh zero, so the result is torchvision's exactly while the grid fits the cap. A RoI whose
grid exceeds the cap along an axis is sampled `max_sampling_ratio` times along that axis
(evenly over the bin, as torchvision would with that ratio), so its cost stays bounded.

Low-precision features (bfloat16, float16) are read in their own dtype, but every weighted
term is accumulated in float32 and the sum rounded once, as torchvision's autocast does.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.ops.boxes import box_area, check_boxes
from jaxseg.ops.weighted_gather import accumulation_dtype, weighted_gather


def normalize_output_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    """Returns `output_size` as (height, width), raising ValueError unless both are >= 1."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"output_size must be a positive int or a pair of them, got {output_size}")
    return size


def check_features(features: jax.Array, name: str = "features") -> None:
    """Raises ValueError unless `features` is a non-empty [H, W, C] map."""
    if features.ndim != 3:
        raise ValueError(
            f"{name} must have shape [H, W, C] (one image, channels last; vmap over a batch), "
            f"got {features.shape}"
        )
    if 0 in features.shape:
        raise ValueError(f"{name} must not be empty, got shape {features.shape}")


def check_rois(boxes: jax.Array) -> None:
    """Raises ValueError unless `boxes` has shape [R, 4]."""
    if boxes.ndim != 2:
        raise ValueError(f"boxes must have shape [R, 4] (x1, y1, x2, y2), got {boxes.shape}")
    check_boxes(boxes)


def flat_padded(features: jax.Array) -> jax.Array:
    """Returns [(H + 1) * (W + 1), C]: `features` [H, W, C] zero-padded bottom/right, flattened."""
    height, width, channels = features.shape
    padded = jnp.pad(features, ((0, 1), (0, 1), (0, 0)))
    return padded.reshape((height + 1) * (width + 1), channels)


def axis_samples(start, length, bins: int, slots: int, grid) -> jax.Array:
    """Returns the [bins * slots] sample coordinates along one axis of a RoI.

    `grid` (<= `slots`, possibly traced) samples per bin are spread evenly over each bin;
    slots from `grid` on hold coordinates past the bin, which the caller weighs zero.
    Written in torchvision's order of operations so that both round alike.
    """
    bin_size = length / bins
    p = jnp.arange(bins, dtype=bin_size.dtype)[:, None]
    i = jnp.arange(slots, dtype=bin_size.dtype)[None, :]
    grid = jnp.asarray(grid, bin_size.dtype)
    return (start + p * bin_size + (i + 0.5) * bin_size / jnp.maximum(grid, 1)).reshape(-1)


def axis_weights(coords: jax.Array, size) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (low index [S] int32, weight of low [S], weight of low + 1 [S]) for coords [S].

    torchvision's `bilinear_interpolate`: samples outside [-1, size] weigh nothing; negative
    coordinates snap to 0; at or past the last row, the sample takes the last row alone.
    """
    inside = (coords >= -1.0) & (coords <= size)
    coords = jnp.maximum(coords, 0.0)
    low = jnp.floor(coords)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    frac = jnp.where(at_edge, 0.0, coords - low)
    zero = jnp.zeros_like(frac)
    return (
        low.astype(jnp.int32),
        jnp.where(inside, 1.0 - frac, zero),
        jnp.where(inside, frac, zero),
    )


def adaptive_sampling_grid(
    boxes: ArrayLike,
    output_size: int | Sequence[int],
    *,
    spatial_scale: float = 1.0,
    aligned: bool = False,
) -> jax.Array:
    """Returns [R, 2] int32: torchvision's adaptive samples per bin (rows, cols) of each RoI.

    `ceil(roi_height / oh)` and `ceil(roi_width / ow)` for boxes [R, 4] xyxy in input pixels,
    the grid `roi_align(..., sampling_ratio=-1)` uses (before `max_sampling_ratio` caps it);
    0 for an empty aligned RoI, which then pools to 0.
    """
    boxes = jnp.asarray(boxes)
    check_rois(boxes)
    out_h, out_w = normalize_output_size(output_size)
    boxes = boxes.astype(jnp.result_type(boxes.dtype, jnp.float32))
    roi_h, roi_w = roi_extent(boxes, jnp.asarray(spatial_scale, boxes.dtype), aligned)
    grid = jnp.stack([jnp.ceil(roi_h / out_h), jnp.ceil(roi_w / out_w)], axis=-1)
    return jnp.maximum(grid, 0).astype(jnp.int32)


def roi_start(box: jax.Array, spatial_scale: jax.Array, aligned: bool) -> jax.Array:
    """Returns [..., 4] the box on the map, shifted by half a pixel when `aligned`."""
    return box * spatial_scale - (0.5 if aligned else 0.0)


def roi_extent(box, spatial_scale, aligned: bool) -> tuple[jax.Array, jax.Array]:
    """Returns (roi_height, roi_width) [...] on the map, at least 1 unless `aligned`."""
    x1, y1, x2, y2 = jnp.moveaxis(roi_start(box, spatial_scale, aligned), -1, 0)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    return roi_h, roi_w


def sample_slots(sampling_ratio: int, max_sampling_ratio: int) -> int:
    """Returns the static samples per bin and axis: the ratio, or the cap when adaptive."""
    return sampling_ratio if sampling_ratio > 0 else max_sampling_ratio


def roi_sample_points(
    box: jax.Array,
    base: jax.Array,
    height: jax.Array,
    width: jax.Array,
    spatial_scale: jax.Array,
    *,
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    max_sampling_ratio: int = 1,
    grid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Returns (index [oh, ow, T] int32, weight [oh, ow, T]) of one RoI's bilinear samples.

    T = 4 * S**2 with S = `sample_slots(sampling_ratio, max_sampling_ratio)`: the four
    neighbours of each of the bin's sample slots, as rows of a flat padded buffer (see module
    doc). The weights include the 1 / (samples per bin) of the bin average, and are zero for
    the slots past an adaptive grid, so `weighted_gather(flat, index, weight)` is the RoI's
    output.

    Args:
      box: [4] xyxy, input pixels.
      base, height, width: int scalars, where the RoI's map starts in the buffer, its H and W.
      spatial_scale: float scalar, map pixels per input pixel.
      grid: optional [2] int (rows, cols) samples per bin replacing the adaptive grid (when
        `sampling_ratio <= 0`), for a RoI given in another frame than its grid's; capped too.
    """
    out_h, out_w = output_size
    slots = sample_slots(sampling_ratio, max_sampling_ratio)
    x1, y1, _, _ = roi_start(box, spatial_scale, aligned)
    roi_h, roi_w = roi_extent(box, spatial_scale, aligned)
    if sampling_ratio > 0:
        grid_h = grid_w = jnp.asarray(sampling_ratio, box.dtype)
    else:
        if grid is None:
            grid_h, grid_w = jnp.ceil(roi_h / out_h), jnp.ceil(roi_w / out_w)
        else:
            grid_h, grid_w = jnp.asarray(grid, box.dtype)
        grid_h = jnp.clip(grid_h, 0, max_sampling_ratio)
        grid_w = jnp.clip(grid_w, 0, max_sampling_ratio)
    y_low, y_w0, y_w1 = axis_weights(axis_samples(y1, roi_h, out_h, slots, grid_h), height)
    x_low, x_w0, x_w1 = axis_weights(axis_samples(x1, roi_w, out_w, slots, grid_w), width)
    if sampling_ratio <= 0:
        # Slots past the RoI's own grid weigh nothing; torchvision divides by the samples it
        # took, at least one (an empty aligned RoI pools to 0).
        used_h = jnp.tile(jnp.arange(slots) < grid_h, out_h)  # [oh * S]
        used_w = jnp.tile(jnp.arange(slots) < grid_w, out_w)  # [ow * S]
        y_w0, y_w1 = jnp.where(used_h, y_w0, 0.0), jnp.where(used_h, y_w1, 0.0)
        x_w0, x_w1 = jnp.where(used_w, x_w0, 0.0), jnp.where(used_w, x_w1, 0.0)
    scale = 1.0 / jnp.maximum(grid_h * grid_w, 1.0)

    stride = width + 1
    top_left = base + y_low[:, None] * stride + x_low[None, :]  # [oh * S, ow * S]
    index = jnp.stack([top_left, top_left + 1, top_left + stride, top_left + stride + 1], -1)
    weight = (
        jnp.stack(
            [
                y_w0[:, None] * x_w0[None, :],
                y_w0[:, None] * x_w1[None, :],
                y_w1[:, None] * x_w0[None, :],
                y_w1[:, None] * x_w1[None, :],
            ],
            axis=-1,
        )
        * scale
    )  # [oh * S, ow * S, 4]

    def per_bin(a):  # [oh * S, ow * S, 4] -> [oh, ow, S * S * 4]
        a = a.reshape(out_h, slots, out_w, slots, 4).transpose(0, 2, 1, 3, 4)
        return a.reshape(out_h, out_w, slots * slots * 4)

    return per_bin(index), per_bin(weight)


DEFAULT_MAX_SAMPLING_RATIO = 4


def roi_align(
    features: ArrayLike,
    boxes: ArrayLike,
    output_size: int | Sequence[int],
    *,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    max_sampling_ratio: int = DEFAULT_MAX_SAMPLING_RATIO,
) -> jax.Array:
    """Returns [R, oh, ow, C]: each RoI of `boxes` pooled from `features` by bilinear sampling.

    Args:
      features: [H, W, C] one image's feature map, channels last.
      boxes: [R, 4] xyxy in input pixels; `spatial_scale` maps them onto `features`.
      output_size: oh and ow, an int or a pair.
      spatial_scale: feature pixels per input pixel, e.g. 1/16 for a stride-16 map.
      sampling_ratio: samples per bin along each axis; <= 0 (torchvision's default -1) is
        adaptive, `ceil(roi_size / output_size)` per RoI and axis, up to `max_sampling_ratio`.
      aligned: shift boxes by half a pixel so that pixel centres sit at integer + 0.5
        (Detectron2's RoIAlignV2). `False` (torchvision's default) reproduces the original
        Mask R-CNN.
      max_sampling_ratio: static cap of the adaptive grid (ignored for a fixed ratio). Exact
        while a RoI's grid fits; past it the RoI takes this many samples along that axis.
        The cost of adaptive sampling is that of a fixed ratio of this value.

    The defaults are torchvision's. Same numbers as `torchvision.ops.roi_align(features,
    [boxes], output_size, spatial_scale, sampling_ratio, aligned)` with NCHW transposed to
    NHWC; bfloat16 / float16 features accumulate in float32 and round once (torchvision's
    autocast result). Gradients flow to `features` (the same as torchvision's backward) and,
    piecewise, to `boxes` (torchvision gives none). Batch over images with `jax.vmap`.
    """
    features, boxes = jnp.asarray(features), jnp.asarray(boxes)
    check_features(features)
    check_rois(boxes)
    output_size = normalize_output_size(output_size)
    check_sampling(spatial_scale, sampling_ratio, max_sampling_ratio)
    height, width, _ = features.shape
    flat = flat_padded(features)
    boxes = boxes.astype(accumulation_dtype(features.dtype))

    def one(box):
        return roi_sample_points(
            box,
            jnp.int32(0),
            jnp.int32(height),
            jnp.int32(width),
            jnp.asarray(spatial_scale, box.dtype),
            output_size=output_size,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            max_sampling_ratio=max_sampling_ratio,
        )

    index, weight = jax.vmap(one)(boxes)  # [R, oh, ow, T] each
    return weighted_gather(flat, index, weight)


def check_sampling(
    spatial_scale: float, sampling_ratio: int, max_sampling_ratio: int = DEFAULT_MAX_SAMPLING_RATIO
) -> None:
    """Raises ValueError for a non-positive scale, a non-int ratio, or a cap below 1."""
    if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
        raise ValueError(
            f"sampling_ratio must be an int (>= 1 fixed, <= 0 adaptive), got {sampling_ratio!r}"
        )
    if sampling_ratio <= 0 and (not isinstance(max_sampling_ratio, int) or max_sampling_ratio < 1):
        raise ValueError(
            f"max_sampling_ratio must be an int >= 1 (the static cap of adaptive sampling, "
            f"sampling_ratio={sampling_ratio}), got {max_sampling_ratio!r}"
        )
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0, got {spatial_scale!r}")


def fpn_levels(
    boxes: ArrayLike,
    *,
    min_level: int,
    max_level: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> jax.Array:
    """Returns [R] int32: the FPN level of each box, minus `min_level` (0 = finest level given).

    Level `floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)`, clamped to
    [min_level, max_level] (FPN paper eq. 1; torchvision's `LevelMapper`).
    """
    boxes = jnp.asarray(boxes)
    check_rois(boxes)
    sizes = jnp.sqrt(box_area(boxes))
    levels = jnp.floor(canonical_level + jnp.log2(sizes / canonical_scale) + eps)
    return (jnp.clip(levels, min_level, max_level) - min_level).astype(jnp.int32)


def level_range(scales: Sequence[float]) -> tuple[int, int]:
    """Returns (min_level, max_level) for maps of `scales` (2**-level each), finest first."""
    levels = [-math.log2(s) for s in scales]
    if any(abs(level - round(level)) > 1e-6 for level in levels):
        raise ValueError(f"scales must be powers of two (1/4, 1/8, ...), got {list(scales)}")
    if levels != sorted(levels) or len(set(levels)) != len(levels):
        raise ValueError(f"scales must be strictly decreasing (finest map first), got {scales}")
    return int(levels[0]), int(levels[-1])


def assign_levels(
    levels: Sequence[jax.Array],
    boxes: jax.Array,
    scales: Sequence[float],
    *,
    canonical_scale: float,
    canonical_level: int,
) -> jax.Array:
    """Returns [R] int32, the index into `levels` of each box's FPN level.

    Checks that the L maps [H_l, W_l, C] share their channels and match L power-of-two
    `scales`, finest first, and that `boxes` is [R, 4]; raises ValueError otherwise.
    """
    if len(levels) != len(scales) or not levels:
        raise ValueError(
            f"features_per_level and scales must have the same positive length, got "
            f"{len(levels)} maps and {len(scales)} scales"
        )
    for i, f in enumerate(levels):
        check_features(f, f"features_per_level[{i}]")
    if len({f.shape[-1] for f in levels}) != 1:
        raise ValueError(f"all levels need the same channels, got {[f.shape for f in levels]}")
    check_rois(boxes)
    min_level, max_level = level_range(scales)
    return fpn_levels(
        boxes,
        min_level=min_level,
        max_level=max_level,
        canonical_scale=canonical_scale,
        canonical_level=canonical_level,
    )


def multiscale_roi_align(
    features_per_level: Sequence[ArrayLike],
    boxes: ArrayLike,
    output_size: int | Sequence[int],
    *,
    scales: Sequence[float],
    sampling_ratio: int = 2,
    aligned: bool = False,
    max_sampling_ratio: int = DEFAULT_MAX_SAMPLING_RATIO,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> jax.Array:
    """Returns [R, oh, ow, C]: each RoI pooled by RoIAlign from its FPN level.

    Args:
      features_per_level: L maps [H_l, W_l, C], finest first (e.g. P2..P5).
      boxes: [R, 4] xyxy in input pixels.
      output_size: oh and ow.
      scales: L spatial scales, 2**-level each (1/4, 1/8, 1/16, 1/32 for P2..P5).
      sampling_ratio, aligned, max_sampling_ratio: as in `roi_align`; torchvision's
        `MultiScaleRoIAlign` has no `aligned` (always False) and Mask R-CNN builds it with
        `sampling_ratio=2`. Adaptive sampling (<= 0) with `aligned=True` is detectron2's
        ROIAlignV2 pooler.
      canonical_scale, canonical_level: a box of sqrt(area) = 224 maps to level 4.

    Same numbers as torchvision's `MultiScaleRoIAlign`. Every RoI reads only its own level:
    the levels share one flat buffer, so the cost is that of a single `roi_align`.
    """
    levels = [jnp.asarray(f) for f in features_per_level]
    boxes = jnp.asarray(boxes)
    output_size = normalize_output_size(output_size)
    for s in scales:
        check_sampling(s, sampling_ratio, max_sampling_ratio)
    dtype = jnp.result_type(*levels)
    boxes = boxes.astype(accumulation_dtype(dtype))
    level = assign_levels(
        levels, boxes, scales, canonical_scale=canonical_scale, canonical_level=canonical_level
    )

    flat = jnp.concatenate([flat_padded(f.astype(dtype)) for f in levels])
    sizes = [(f.shape[0], f.shape[1]) for f in levels]
    bases = [0]
    for h, w in sizes[:-1]:
        bases.append(bases[-1] + (h + 1) * (w + 1))

    def one(box, lvl):
        return roi_sample_points(
            box,
            jnp.asarray(bases, jnp.int32)[lvl],
            jnp.asarray([h for h, _ in sizes], jnp.int32)[lvl],
            jnp.asarray([w for _, w in sizes], jnp.int32)[lvl],
            jnp.asarray(scales, box.dtype)[lvl],
            output_size=output_size,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            max_sampling_ratio=max_sampling_ratio,
        )

    index, weight = jax.vmap(one)(boxes, level)
    return weighted_gather(flat, index, weight)
