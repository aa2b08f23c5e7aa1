"""The suppression test that every NMS variant shares: torchvision's IoU and threshold.

torchvision's CPU kernel (`nms_kernel.cpp`) computes the areas of all boxes once, then for a
kept box i and a later box j

    inter = max(min(x2_i, x2_j) - max(x1_i, x1_j), 0) * max(min(y2_i, y2_j) - ..., 0)
    iou = inter / (area_i + area_j - inter)

in the boxes' dtype, and suppresses j when `iou > iou_threshold` with the threshold a
*double*. The functions here reproduce that bit for bit in float32 on XLA:CPU, on two
conditions their callers keep:

- the areas are computed before, and outside, any loop that uses them: fused into the
  same kernel, XLA:CPU contracts `area_i + (w_j * h_j)` into a fused multiply-add, which
  rounds once where torchvision rounds twice (about 3% of random pairs then differ in the
  last bit);
- the threshold is compared as a double (`exceeds`).

On GPU, XLA contracts multiply-adds as nvcc does for torchvision's CUDA kernel (which also
compares with a float32 threshold); an IoU within one float32 step of the threshold may then
be decided differently from torchvision's CPU kernel.
"""

import jax
import jax.numpy as jnp
import numpy as np


def upcast_boxes(boxes: jax.Array) -> jax.Array:
    """Returns boxes [..., 4] in the dtype NMS computes in: float32, or float64 if given.

    Integer boxes would overflow in their areas (an int8 box's width already can) and
    float16 areas overflow to inf past 65504; torchvision's CPU kernel refuses these dtypes
    and its autocast path casts them to float32, which is what this does.
    """
    if boxes.dtype == jnp.float64:
        return boxes
    return boxes.astype(jnp.float32)


def box_areas(boxes: jax.Array) -> jax.Array:
    """Returns the areas [...] of boxes [..., 4] xyxy, torchvision's arithmetic."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pair_iou(
    kept: jax.Array, kept_areas: jax.Array, other: jax.Array, other_areas: jax.Array
) -> jax.Array:
    """Returns the IoU [...] of `kept` [..., 4] with `other` [..., 4] (broadcast together).

    `kept` is the higher-ranked box of each pair, as `i` in torchvision's kernel; its area
    comes first in the union. Empty pairs (union 0) give 0 where torchvision gives NaN:
    neither suppresses.
    """
    top_left = jnp.maximum(kept[..., :2], other[..., :2])
    bottom_right = jnp.minimum(kept[..., 2:], other[..., 2:])
    wh = jnp.maximum(bottom_right - top_left, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = kept_areas + other_areas - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0)


def exceeds(iou: jax.Array, iou_threshold: float) -> jax.Array:
    """Returns `iou > iou_threshold` [...] bool, the threshold taken as a double.

    For an IoU v in a float dtype and t_d = t rounded to that dtype, no value of the dtype
    lies strictly between t and t_d, so v > t <=> v > t_d when t_d <= t, and v >= t_d when
    t_d > t (float32(0.2) is above 0.2: an IoU of exactly float32(0.2) is suppressed at 0.2).
    Decided at trace time.
    """
    rounded = np.asarray(iou_threshold, dtype=iou.dtype)
    if float(rounded) <= float(iou_threshold):
        return iou > rounded
    return iou >= rounded


def descending_order(scores: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Returns [N] int32 indices sorting `scores` high to low, ties by lower index.

    torchvision's stable descending sort. With `valid` [N] bool, the invalid boxes go last
    (in score order among themselves), which leaves the order of the valid ones unchanged.
    """
    index = jnp.arange(scores.shape[0], dtype=jnp.int32)
    # -0.0 and 0.0 are equal to torch's sort but ordered by XLA's total-order sort.
    key = jnp.where(scores == 0, jnp.zeros_like(scores), -scores)
    if valid is None:
        _, order = jax.lax.sort((key, index), num_keys=2)
    else:
        _, _, order = jax.lax.sort(((~valid).astype(jnp.int32), key, index), num_keys=3)
    return order


def check_nms_inputs(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output_size: int,
) -> None:
    """Raises ValueError unless boxes [N, 4], scores [N], valid [N] and the settings fit."""
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {boxes.shape}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape [N] = {boxes.shape[:1]}, got {scores.shape}")
    if valid.shape != scores.shape:
        raise ValueError(f"valid must have shape [N] = {scores.shape}, got {valid.shape}")
    if isinstance(iou_threshold, jax.Array) or not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be a Python float in (0, 1], got {iou_threshold!r}")
    if not isinstance(max_output_size, int) or max_output_size < 1:
        raise ValueError(f"max_output_size must be an int >= 1, got {max_output_size!r}")
