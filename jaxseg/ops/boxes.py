"""Box arithmetic: areas, IoU, clipping, format conversions and the box coder.

Boxes are `(x1, y1, x2, y2)` in absolute pixels of the network input, as in torchvision;
a box's width is `x2 - x1` (no `+ 1`).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

# torchvision's clamp on decoded log-sizes: no box grows more than 1000/16 times its anchor.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def check_boxes(boxes: jax.Array, name: str = "boxes") -> None:
    """Raises ValueError unless `boxes` has shape [..., 4]."""
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4] (x1, y1, x2, y2), got {boxes.shape}")


def upcast(x: jax.Array) -> jax.Array:
    """Returns `x` widened as torchvision's `_upcast`: floats to float32 at least, integers
    (and bools) to int32 unless already int32 / int64, so products of coordinates fit."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x if x.dtype in (jnp.float32, jnp.float64) else x.astype(jnp.float32)
    return x if x.dtype in (jnp.int32, jnp.int64) else x.astype(jnp.int32)


def box_area(boxes: ArrayLike) -> jax.Array:
    """Returns the areas [...] of boxes [..., 4] xyxy, in the widened dtype (see `upcast`).

    Same numbers and dtype as `torchvision.ops.box_area`: float16 / bfloat16 boxes give
    float32 areas (no overflow to inf past 65504), int8 / int16 / uint8 boxes int32 ones.
    """
    boxes = upcast(jnp.asarray(boxes))
    check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> jax.Array:
    """Returns the pairwise IoU [N, M] of boxes1 [N, 4] and boxes2 [M, 4] (xyxy).

    Same numbers and dtype as `torchvision.ops.box_iou`: float32 for integer, float16 and
    bfloat16 boxes (areas and intersections widened as in `box_area`), float64 for float64.
    Two differences: a pair of empty boxes has IoU 0, not NaN; integer boxes are widened
    before their corners are subtracted, where torchvision subtracts int8 / int16 corners
    in their own dtype and can wrap around.
    """
    boxes1, boxes2 = jnp.asarray(boxes1), jnp.asarray(boxes2)
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if b.ndim != 2:
            raise ValueError(f"{name} must have shape [N, 4], got {b.shape}")
        check_boxes(b, name)
    if not jnp.issubdtype(jnp.result_type(boxes1, boxes2), jnp.floating):
        boxes1, boxes2 = upcast(boxes1), upcast(boxes2)
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = jnp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    bottom_right = jnp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    # Floats subtract in their own dtype and widen after, as torchvision does.
    wh = jnp.clip(upcast(bottom_right - top_left), min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    dtype = union.dtype if jnp.issubdtype(union.dtype, jnp.floating) else jnp.float32
    inter, union = inter.astype(dtype), union.astype(dtype)
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)


def clip_boxes(boxes: ArrayLike, image_size: tuple[int, int]) -> jax.Array:
    """Returns boxes [..., 4] clipped to an image of `image_size = (height, width)`."""
    boxes = jnp.asarray(boxes)
    check_boxes(boxes)
    height, width = image_size
    x = jnp.clip(boxes[..., 0::2], 0, width)
    y = jnp.clip(boxes[..., 1::2], 0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def small_boxes_mask(boxes: ArrayLike, min_size: float) -> jax.Array:
    """Returns a bool mask [...] of boxes whose width and height are both >= `min_size`.

    The fixed-shape counterpart of `torchvision.ops.remove_small_boxes`.
    """
    boxes = jnp.asarray(boxes)
    check_boxes(boxes)
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


def box_xyxy_to_cxcywh(boxes: ArrayLike) -> jax.Array:
    """Returns boxes [..., 4] as (center x, center y, width, height)."""
    boxes = jnp.asarray(boxes)
    check_boxes(boxes)
    x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def box_cxcywh_to_xyxy(boxes: ArrayLike) -> jax.Array:
    """Returns boxes [..., 4] given as (center x, center y, width, height) in xyxy."""
    boxes = jnp.asarray(boxes)
    check_boxes(boxes)
    cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def _centre_size(boxes: jax.Array) -> tuple[jax.Array, ...]:
    """Returns (cx, cy, w, h) [...] of boxes [..., 4], in torchvision's box coder arithmetic."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(
    boxes: ArrayLike,
    reference_boxes: ArrayLike,
    *,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> jax.Array:
    """Returns deltas [..., 4] (dx, dy, dw, dh) that turn `reference_boxes` into `boxes`.

    Args:
      boxes: [..., 4] xyxy, the targets (for example matched ground truth).
      reference_boxes: [..., 4] xyxy, anchors or proposals.
      weights: (wx, wy, ww, wh) multipliers, e.g. (10, 10, 5, 5) for the RoI heads.

    Same numbers as torchvision's `BoxCoder.encode_single`.
    """
    boxes, reference_boxes = jnp.asarray(boxes), jnp.asarray(reference_boxes)
    check_boxes(boxes)
    check_boxes(reference_boxes, "reference_boxes")
    wx, wy, ww, wh = weights
    ref_cx, ref_cy, ref_w, ref_h = _centre_size(reference_boxes)
    cx, cy, w, h = _centre_size(boxes)
    return jnp.stack(
        [
            wx * (cx - ref_cx) / ref_w,
            wy * (cy - ref_cy) / ref_h,
            ww * jnp.log(w / ref_w),
            wh * jnp.log(h / ref_h),
        ],
        axis=-1,
    )


def decode_boxes(
    deltas: ArrayLike,
    reference_boxes: ArrayLike,
    *,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = BBOX_XFORM_CLIP,
) -> jax.Array:
    """Returns boxes [..., 4] xyxy obtained by applying `deltas` to `reference_boxes`.

    Args:
      deltas: [..., 4] (dx, dy, dw, dh), as produced by `encode_boxes` with the same weights.
      reference_boxes: [..., 4] xyxy, broadcastable against `deltas`.
      weights: (wx, wy, ww, wh) divisors.
      clip: upper clamp on dw and dh after dividing by the weights (log(1000/16)).

    Same numbers as torchvision's `BoxCoder.decode_single`.
    """
    deltas, reference_boxes = jnp.asarray(deltas), jnp.asarray(reference_boxes)
    check_boxes(deltas, "deltas")
    check_boxes(reference_boxes, "reference_boxes")
    wx, wy, ww, wh = weights
    ref_cx, ref_cy, ref_w, ref_h = _centre_size(reference_boxes)
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, clip)
    dh = jnp.minimum(deltas[..., 3] / wh, clip)
    cx = dx * ref_w + ref_cx
    cy = dy * ref_h + ref_cy
    half_w = 0.5 * jnp.exp(dw) * ref_w
    half_h = 0.5 * jnp.exp(dh) * ref_h
    return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


@dataclasses.dataclass(frozen=True)
class BoxCoder:
    """Encodes and decodes box regression targets with fixed weights (torchvision's `BoxCoder`)."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clip: float = BBOX_XFORM_CLIP

    def encode(self, boxes: ArrayLike, reference_boxes: ArrayLike) -> jax.Array:
        """Returns deltas [..., 4]; see `encode_boxes`."""
        return encode_boxes(boxes, reference_boxes, weights=self.weights)

    def decode(self, deltas: ArrayLike, reference_boxes: ArrayLike) -> jax.Array:
        """Returns boxes [..., 4] xyxy; see `decode_boxes`."""
        return decode_boxes(deltas, reference_boxes, weights=self.weights, clip=self.clip)
