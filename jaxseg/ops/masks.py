"""Instance masks: pasting per-RoI masks into the image, cutting mask targets by RoIAlign."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.ops.roi_align import (
    axis_samples,
    axis_weights,
    check_rois,
    check_sampling,
    normalize_output_size,
    roi_extent,
    roi_sample_points,
    roi_start,
    sample_slots,
)
from jaxseg.ops.weighted_gather import weighted_gather

# Mask targets are cut at input resolution, where RoIs span many pixels per bin: a 28 x 28
# target of a 448-pixel RoI needs 16 samples per bin. Exact up to that, bounded past it.
DEFAULT_MASK_MAX_SAMPLING_RATIO = 16
GATHER_COST = 100
# RoI masks copied at once by the separable form: [batch, H, W] float32 of at most 64 MB.
SEPARABLE_BATCH_ELEMENTS = 2**24


def _resize_matrix(start: jax.Array, length: jax.Array, in_size: int, out_size: int) -> jax.Array:
    """Returns [out_size, in_size]: rows that bilinearly resize `in_size` samples to `length`
    pixels placed from image pixel `start`; rows of pixels outside that span are zero.

    PyTorch's `interpolate(mode='bilinear', align_corners=False)` arithmetic, in float32.
    """
    pixel = jnp.arange(out_size, dtype=jnp.int32)
    local = pixel - start  # index into the resized mask
    inside = (local >= 0) & (local < length)
    scale = jnp.float32(in_size) / length.astype(jnp.float32)
    src = jnp.maximum(scale * (local.astype(jnp.float32) + 0.5) - 0.5, 0.0)
    same_size = length == in_size  # PyTorch copies rows unchanged then
    src = jnp.where(same_size, local.astype(jnp.float32), src)
    low = jnp.clip(src.astype(jnp.int32), 0, in_size - 1)
    high = jnp.where(low < in_size - 1, low + 1, low)
    frac = jnp.clip(src - low, 0.0, 1.0)
    cols = jnp.arange(in_size)[None, :]
    matrix = (cols == low[:, None]) * (1.0 - frac)[:, None] + (cols == high[:, None]) * frac[
        :, None
    ]
    return jnp.where(inside[:, None], matrix, 0.0)


def paste_masks_in_image(
    masks: ArrayLike, boxes: ArrayLike, image_size: tuple[int, int], *, padding: int = 1
) -> jax.Array:
    """Returns [R, height, width] float: each mask resized into its box of the image.

    Args:
      masks: [R, M, M] per-RoI mask probabilities (e.g. 28 x 28).
      boxes: [R, 4] xyxy in image pixels.
      image_size: (height, width) of the output.
      padding: zero border added to each mask and, in proportion, to its box, so the mask
        fades out at the box edge.

    torchvision's `paste_masks_in_image`: boxes grown by (M + 2 padding) / M, truncated to
    integers, the padded mask resized bilinearly to the box's `x2 - x1 + 1` by `y2 - y1 + 1`
    pixels and written where the box overlaps the image. Written as two small matrix
    products per mask (bilinear resizing is separable), exact and without scatter.
    """
    masks, boxes = jnp.asarray(masks), jnp.asarray(boxes)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must have shape [R, M, M], got {masks.shape}")
    check_rois(boxes)
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"need one box per mask, got {boxes.shape[0]} boxes, {masks.shape[0]}")
    height, width = image_size
    size = masks.shape[-1]
    padded_size = size + 2 * padding
    masks = jnp.pad(masks.astype(jnp.float32), ((0, 0), (padding, padding), (padding, padding)))
    boxes = boxes.astype(jnp.float32)
    half = 0.5 * (boxes[:, 2:] - boxes[:, :2]) * (padded_size / size)
    centre = 0.5 * (boxes[:, 2:] + boxes[:, :2])
    grown = jnp.concatenate([centre - half, centre + half], axis=1).astype(jnp.int32)  # trunc

    def one(mask, box):
        x1, y1, x2, y2 = box
        rows = _resize_matrix(y1, jnp.maximum(y2 - y1 + 1, 1), padded_size, height)
        cols = _resize_matrix(x1, jnp.maximum(x2 - x1 + 1, 1), padded_size, width)
        # A box with x2 < x1 pastes nothing in torchvision (empty slice).
        rows = jnp.where(y2 >= y1, rows, 0.0)
        cols = jnp.where(x2 >= x1, cols, 0.0)
        return jnp.einsum(
            "hm,mn,wn->hw", rows, mask, cols, precision=jax.lax.Precision.HIGHEST
        )  # [height, width]

    return jax.vmap(one)(masks, grown)


def roi_mask_targets(
    masks: ArrayLike,
    boxes: ArrayLike,
    instance_index: ArrayLike,
    output_size: int | Sequence[int],
    *,
    sampling_ratio: int = -1,
    aligned: bool = False,
    max_sampling_ratio: int = DEFAULT_MASK_MAX_SAMPLING_RATIO,
    sampling_grid: ArrayLike | None = None,
) -> jax.Array:
    """Returns [R, oh, ow] float32: the mask of each RoI's instance, RoIAligned to the RoI.

    Args:
      masks: [N, H, W] ground-truth instance masks (0/1) at input resolution.
      boxes: [R, 4] xyxy RoIs (proposals) in input pixels.
      instance_index: [R] int, the instance each RoI was matched to.
      output_size: (oh, ow), e.g. 28 for Mask R-CNN.
      sampling_ratio, aligned, max_sampling_ratio: as in `roi_align`; the defaults are
        torchvision's `project_masks_on_boxes` (adaptive sampling, `aligned=False`), exact
        while a RoI's grid fits `max_sampling_ratio` (RoIs up to 16 * 28 = 448 pixels).
      sampling_grid: optional [R, 2] int samples per bin (rows, cols) replacing the adaptive
        grid, for RoIs given in another frame than the one their grid follows (mask crops:
        `jaxseg.detection.mask_targets`); see `adaptive_sampling_grid`.

    The mask-head targets of Mask R-CNN (torchvision's `project_masks_on_boxes`). Each RoI
    samples only its own instance's mask: the masks share one flat buffer (see `roi_align`).
    """
    masks, boxes = jnp.asarray(masks), jnp.asarray(boxes)
    instance_index = jnp.asarray(instance_index)
    if masks.ndim != 3 or 0 in masks.shape:
        raise ValueError(f"masks must have shape [N, H, W] with N, H, W > 0, got {masks.shape}")
    check_rois(boxes)
    if instance_index.shape != boxes.shape[:1]:
        raise ValueError(
            f"instance_index must have shape [R] = {boxes.shape[:1]}, got {instance_index.shape}"
        )
    output_size = normalize_output_size(output_size)
    check_sampling(1.0, sampling_ratio, max_sampling_ratio)
    if sampling_grid is not None:
        sampling_grid = jnp.asarray(sampling_grid)
        if sampling_grid.shape != (boxes.shape[0], 2):
            raise ValueError(
                f"sampling_grid must have shape [R, 2] = {(boxes.shape[0], 2)}, got "
                f"{sampling_grid.shape}"
            )
        if sampling_ratio > 0:
            raise ValueError(
                f"sampling_grid replaces the adaptive grid: it needs sampling_ratio <= 0, got "
                f"{sampling_ratio}"
            )
    num, height, width = masks.shape
    masks = masks.astype(jnp.float32)
    boxes = boxes.astype(jnp.float32)
    instance_index = jnp.clip(instance_index.astype(jnp.int32), 0, num - 1)
    if sampling_grid is None:
        sampling_grid = jnp.full((boxes.shape[0], 2), -1, jnp.int32)  # -1: the RoI's own
    kwargs = dict(
        output_size=output_size,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
        max_sampling_ratio=max_sampling_ratio,
    )
    # Two exact forms; the cheaper one for these static shapes is traced. Per RoI, the
    # gather reads 4 * S**2 mask pixels per bin; the separable form costs two products with
    # the [oh, H] and [ow, W] bilinear matrices (and a copy of the RoI's [H, W] mask). A
    # one-channel gather costs about GATHER_COST multiply-adds of a matrix product (measured
    # on CPU: ~40 ns a gathered term, ~0.3 ns a multiply-add), so the products usually win.
    out_h, out_w = output_size
    slots = sample_slots(sampling_ratio, max_sampling_ratio)
    gather_cost = out_h * out_w * 4 * slots**2
    separable_cost = height * width * (out_h + 1) + out_h * out_w * width
    if separable_cost < GATHER_COST * gather_cost:
        return jax.lax.map(
            lambda args: _separable_mask_target(masks, *args, **kwargs),
            (boxes, instance_index, sampling_grid),
            batch_size=max(1, SEPARABLE_BATCH_ELEMENTS // (height * width)),
        )
    # [N, H + 1, W + 1] -> [N * (H + 1) * (W + 1), 1]: one flat padded map per instance.
    flat = jnp.pad(masks, ((0, 0), (0, 1), (0, 1))).reshape(-1, 1)

    def one(box, idx, grid):
        return roi_sample_points(
            box,
            idx * (height + 1) * (width + 1),
            jnp.int32(height),
            jnp.int32(width),
            jnp.float32(1.0),
            grid=_own_grid(box, grid, output_size, aligned),
            **kwargs,
        )

    index, weight = jax.vmap(one)(boxes, instance_index, sampling_grid)
    return weighted_gather(flat, index, weight)[..., 0]


def _own_grid(box, grid, output_size, aligned):
    """Returns [2] the adaptive grid of `box` where `grid` is -1, else `grid`."""
    roi_h, roi_w = roi_extent(box, jnp.float32(1.0), aligned)
    own = jnp.stack([jnp.ceil(roi_h / output_size[0]), jnp.ceil(roi_w / output_size[1])])
    return jnp.where(grid < 0, own, grid.astype(own.dtype))


def _axis_matrix(start, length, bins: int, size: int, *, slots: int, grid) -> jax.Array:
    """Returns [bins, size]: row p averages the `grid` bilinear samples of bin p on `size`
    pixels (torchvision's RoIAlign weights along one axis; slots past `grid` weigh 0)."""
    low, w0, w1 = axis_weights(axis_samples(start, length, bins, slots, grid), size)
    used = jnp.tile(jnp.arange(slots) < grid, bins)  # [bins * S]
    w0, w1 = jnp.where(used, w0, 0.0), jnp.where(used, w1, 0.0)
    bin_of = jnp.repeat(jnp.arange(bins), slots)
    # Column `size` catches the upper neighbour of samples on the last pixel (weight 0).
    matrix = jnp.zeros((bins, size + 1), w0.dtype).at[bin_of, low].add(w0)
    matrix = matrix.at[bin_of, low + 1].add(w1)
    return matrix[:, :size] / jnp.maximum(grid, 1.0)


def _separable_mask_target(
    masks, box, idx, grid, *, output_size, sampling_ratio, aligned, max_sampling_ratio
):
    """Returns [oh, ow]: RoIAlign of `masks[idx]` [H, W] in `box` as `Ay @ mask @ Ax^T`.

    Bilinear sampling and the bin average factor per axis (torchvision divides by
    grid_h * grid_w, and a bin with no sample along either axis is 0), so this is the same
    sum as the gather in `roi_align`, in another order.
    """
    _, height, width = masks.shape
    slots = sample_slots(sampling_ratio, max_sampling_ratio)
    x1, y1, _, _ = roi_start(box, jnp.float32(1.0), aligned)
    roi_h, roi_w = roi_extent(box, jnp.float32(1.0), aligned)
    if sampling_ratio > 0:
        grid_h = grid_w = jnp.float32(sampling_ratio)
    else:
        grid_h, grid_w = jnp.clip(_own_grid(box, grid, output_size, aligned), 0, max_sampling_ratio)
    rows = _axis_matrix(y1, roi_h, output_size[0], height, slots=slots, grid=grid_h)
    cols = _axis_matrix(x1, roi_w, output_size[1], width, slots=slots, grid=grid_w)
    return jnp.einsum("ph,hw,qw->pq", rows, masks[idx], cols, precision=jax.lax.Precision.HIGHEST)
