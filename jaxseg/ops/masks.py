"""Instance masks: pasting per-RoI masks into the image, cutting mask targets by RoIAlign."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.ops.roi_align import (
    check_rois,
    check_sampling,
    normalize_output_size,
    roi_sample_points,
    weighted_gather,
)


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
    sampling_ratio: int = 2,
    aligned: bool = False,
) -> jax.Array:
    """Returns [R, oh, ow] float32: the mask of each RoI's instance, RoIAligned to the RoI.

    Args:
      masks: [N, H, W] ground-truth instance masks (0/1) at input resolution.
      boxes: [R, 4] xyxy RoIs (proposals) in input pixels.
      instance_index: [R] int, the instance each RoI was matched to.
      output_size: (oh, ow), e.g. 28 for Mask R-CNN.
      sampling_ratio, aligned: as in `roi_align`.

    The mask-head targets of Mask R-CNN (torchvision's `project_masks_on_boxes`). Each RoI
    samples only its own instance's mask: the masks share one flat buffer (see `roi_align`).
    torchvision uses adaptive sampling here; a fixed ratio keeps shapes static.
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
    check_sampling(1.0, sampling_ratio)
    num, height, width = masks.shape
    # [N, H + 1, W + 1] -> [N * (H + 1) * (W + 1), 1]: one flat padded map per instance.
    flat = jnp.pad(masks.astype(jnp.float32), ((0, 0), (0, 1), (0, 1))).reshape(-1, 1)
    instance_index = jnp.clip(instance_index.astype(jnp.int32), 0, num - 1)

    def one(box, idx):
        return roi_sample_points(
            box,
            idx * (height + 1) * (width + 1),
            jnp.int32(height),
            jnp.int32(width),
            jnp.float32(1.0),
            output_size=output_size,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
        )

    index, weight = jax.vmap(one)(boxes.astype(jnp.float32), instance_index)
    return weighted_gather(flat, index, weight)[..., 0]
