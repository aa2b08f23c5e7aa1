"""Tiled NMS for accelerators: fixed work per step, the same result as greedy NMS.

Greedy NMS (`jaxseg.ops.nms`) takes one sequential step per kept box. This version takes one
step per *tile* of `tile_size` boxes, in descending score order (the design of the TPU
detectors' padded NMS, written here exactly):

1. the tile's boxes are tested against every box kept so far, held in a buffer of
   `max_output_size` slots: an IoU tile [max_output_size, tile_size];
2. inside the tile, greedy order is resolved exactly: with S [T, T] the suppression
   relation of the tile's surviving boxes (p before q, IoU > threshold, same class), the
   kept set is the unique solution of
       kept[q] = alive[q] and not any(kept[p] and S[p, q] for p < q),
   found by iterating that equation from kept = alive until nothing changes. After k
   iterations the first k entries are final, so it ends within T iterations; it ends after
   d + 2 where d is the longest chain of suppressions inside the tile (a few for real
   detections). Published tiled versions that stop this iteration early, or decide it with
   a fixed 0.5, keep a different set; this one keeps torchvision's;
3. the tile's kept boxes are appended to the buffer.

Sequential depth (while-loop trip counts) for N boxes, T = min(tile_size, N):
  outer loop  <= ceil(N / T) steps; it stops after the last valid box (valid boxes are
              sorted first) or once `max_output_size` boxes are kept;
  inner loop  <= T steps per outer step, d + 2 in practice.
Work per outer step: T * max_output_size + T * T * (inner steps) IoUs; memory
O(N + T * (T + max_output_size)), with no N x N matrix.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxseg.ops.suppression import (
    box_areas,
    check_nms_inputs,
    descending_order,
    exceeds,
    pair_iou,
    upcast_boxes,
)

TILE_SIZE = 512


def tiled_nms_depth(num_boxes: int, *, tile_size: int = TILE_SIZE) -> tuple[int, int]:
    """Returns (outer steps, inner steps per outer step), the loops' trip-count bounds."""
    tile = max(min(tile_size, num_boxes), 1)
    return math.ceil(num_boxes / tile), tile


def _tiled(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array | None,
    valid: jax.Array,
    iou_threshold: float,
    max_output_size: int,
    tile_size: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Returns (indices [M], valid [M], outer steps, inner steps) for M = max_output_size."""
    num_boxes, slots = boxes.shape[0], max_output_size
    if num_boxes == 0:
        zero = jnp.int32(0)
        return jnp.zeros((slots,), jnp.int32), jnp.zeros((slots,), bool), zero, zero
    tiles, tile = tiled_nms_depth(num_boxes, tile_size=tile_size)
    padding = tiles * tile - num_boxes
    order = descending_order(scores, valid)  # valid boxes first
    boxes = jnp.pad(upcast_boxes(boxes)[order], ((0, padding), (0, 0)))  # [tiles * T, 4]
    areas = box_areas(boxes)  # outside the loops: see jaxseg.ops.suppression
    alive = jnp.pad(valid[order], (0, padding))
    if classes is not None:
        classes = jnp.pad(classes[order], (0, padding))
    num_valid = jnp.sum(valid)
    later = jnp.asarray(np.triu(np.ones((tile, tile), bool), k=1))  # [T, T] p before q
    slot = jnp.arange(slots)

    def tile_slice(x, start):
        return jax.lax.dynamic_slice_in_dim(x, start, tile)

    def more_tiles(state):
        t, count, _, _ = state
        return (t < tiles) & (count < slots) & (t * tile < num_valid)

    def next_tile(state):
        t, count, kept_pos, inner_steps = state
        start = t * tile
        tile_boxes, tile_areas = tile_slice(boxes, start), tile_slice(areas, start)
        tile_alive = tile_slice(alive, start)

        # 1. Suppression by the boxes kept in earlier tiles: [M, T].
        by_kept = exceeds(
            pair_iou(boxes[kept_pos][:, None], areas[kept_pos][:, None], tile_boxes, tile_areas),
            iou_threshold,
        )
        by_kept &= (slot < count)[:, None]
        if classes is not None:
            tile_classes = tile_slice(classes, start)
            by_kept &= classes[kept_pos][:, None] == tile_classes
        tile_alive &= ~jnp.any(by_kept, axis=0)

        # 2. Exact greedy order inside the tile: iterate to the fixed point, [T, T].
        within = exceeds(
            pair_iou(tile_boxes[:, None], tile_areas[:, None], tile_boxes, tile_areas),
            iou_threshold,
        )
        within &= later  # kept only ever holds alive boxes, so no alive mask is needed
        if classes is not None:
            within &= tile_classes[:, None] == tile_classes

        def unsettled(inner):
            step, _, changed = inner
            return changed & (step < tile)

        def resolve(inner):
            step, kept, _ = inner
            new = tile_alive & ~jnp.any(within & kept[:, None], axis=0)
            return step + 1, new, jnp.any(new != kept)

        steps, kept, _ = jax.lax.while_loop(
            unsettled, resolve, (jnp.int32(0), tile_alive, jnp.bool_(True))
        )

        # 3. Append the tile's kept boxes to the buffer, in order; past M they drop.
        rank = count + jnp.cumsum(kept) - 1
        kept_pos = kept_pos.at[jnp.where(kept, rank, slots)].set(
            start + jnp.arange(tile, dtype=jnp.int32), mode="drop"
        )
        count = jnp.minimum(count + jnp.sum(kept), slots).astype(jnp.int32)
        return t + 1, count, kept_pos, inner_steps + steps

    outer_steps, count, kept_pos, inner_steps = jax.lax.while_loop(
        more_tiles,
        next_tile,
        (jnp.int32(0), jnp.int32(0), jnp.zeros((slots,), jnp.int32), jnp.int32(0)),
    )
    out_valid = slot < count
    indices = jnp.where(out_valid, order[jnp.minimum(kept_pos, num_boxes - 1)], 0)
    return indices.astype(jnp.int32), out_valid, outer_steps, inner_steps


def tiled_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
    tile_size: int = TILE_SIZE,
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices [max_output_size] int32, valid [max_output_size] bool) of kept boxes.

    The same result as `jaxseg.ops.nms` (and `torchvision.ops.nms(...)[:max_output_size]`),
    with the arguments of `jaxseg.ops.nms` and a `tile_size` T (512). Sequential depth:
    at most ceil(N / T) outer steps, each with an inner loop of at most T steps that ends
    after d + 2 for d the longest suppression chain inside a tile; see the module
    docstring. N = 2000: at most 4 outer steps; N = 10000: at most 20.
    """
    boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    check_nms_inputs(boxes, scores, valid, iou_threshold, max_output_size)
    _check_tile_size(tile_size)
    return _tiled(boxes, scores, None, valid, iou_threshold, max_output_size, tile_size)[:2]


def tiled_batched_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    classes: ArrayLike,
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
    tile_size: int = TILE_SIZE,
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices, valid) as `tiled_nms`, where boxes only suppress their own class.

    Args:
      classes: [N] int class (or any group id) of each box; the rest as `tiled_nms`.

    The same result as `jaxseg.ops.batched_nms` (and `torchvision.ops.batched_nms`): greedy
    NMS over all boxes in descending score order, with suppression only within a class, is
    per-class NMS. Same sequential depth as `tiled_nms`.
    """
    boxes, scores, classes = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes)
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    check_nms_inputs(boxes, scores, valid, iou_threshold, max_output_size)
    if classes.shape != scores.shape:
        raise ValueError(f"classes must have shape [N] = {scores.shape}, got {classes.shape}")
    _check_tile_size(tile_size)
    return _tiled(boxes, scores, classes, valid, iou_threshold, max_output_size, tile_size)[:2]


def _check_tile_size(tile_size: int) -> None:
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be an int >= 1, got {tile_size!r}")
