"""Non-maximum suppression with a fixed-size output, jit- and vmap-friendly.

Greedy NMS as in torchvision: boxes are visited in descending score order (ties by lower
index, torchvision's stable sort) and each kept box removes every later box whose IoU with
it is strictly greater than the threshold. Here the visit jumps straight to the next
surviving box, so the loop runs once per *kept* box and stops after `max_output_size`:

  time O(N log N + K * N), memory O(N), for N boxes and K = min(kept, max_output_size),

with no N x N IoU matrix, no Python loop over boxes and no host round-trip.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.ops.boxes import box_area, check_boxes


def _check(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output_size: int,
):
    if boxes.ndim != 2:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    check_boxes(boxes)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape [N] = {boxes.shape[:1]}, got {scores.shape}")
    if valid.shape != scores.shape:
        raise ValueError(f"valid must have shape [N] = {scores.shape}, got {valid.shape}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if not isinstance(max_output_size, int) or max_output_size < 1:
        raise ValueError(f"max_output_size must be an int >= 1, got {max_output_size!r}")


def _descending_order(scores: jax.Array) -> jax.Array:
    """Returns [N] int32 indices sorting `scores` high to low, ties by lower index."""
    index = jnp.arange(scores.shape[0], dtype=jnp.int32)
    _, order = jax.lax.sort((-scores, index), num_keys=2)
    return order


def _iou(box: jax.Array, area: jax.Array, boxes: jax.Array, areas: jax.Array) -> jax.Array:
    """Returns [N]: IoU of `box` [4] (or [N, 4], pairwise) with `boxes` [N, 4].

    torchvision's arithmetic; empty pairs give 0, where torchvision gives NaN (neither
    suppresses).
    """
    top_left = jnp.maximum(box[..., :2], boxes[:, :2])
    bottom_right = jnp.minimum(box[..., 2:], boxes[:, 2:])
    wh = jnp.maximum(bottom_right - top_left, 0.0)
    inter = wh[:, 0] * wh[:, 1]
    union = area + areas - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _greedy_nms(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS, one loop step per kept box, stopping at `max_output_size`."""
    num_boxes = boxes.shape[0]
    order = _descending_order(scores)
    boxes = boxes[order]
    areas = box_area(boxes)

    def not_done(state):
        count, alive, _ = state
        return (count < max_output_size) & jnp.any(alive)

    def keep_next(state):
        count, alive, kept = state
        i = jnp.argmax(alive).astype(jnp.int32)  # the best surviving box
        suppress = _iou(boxes[i], areas[i], boxes, areas) > iou_threshold
        alive = alive & ~suppress
        alive = alive.at[i].set(False)
        return count + 1, alive, kept.at[count].set(i)

    if num_boxes == 0:
        count = jnp.int32(0)
        kept = jnp.zeros((max_output_size,), jnp.int32)
    else:
        count, _, kept = jax.lax.while_loop(
            not_done,
            keep_next,
            (jnp.int32(0), valid[order], jnp.zeros((max_output_size,), jnp.int32)),
        )
    valid = jnp.arange(max_output_size) < count
    indices = jnp.where(valid, order[kept] if num_boxes else kept, 0)
    return indices.astype(jnp.int32), valid


def nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices [max_output_size] int32, valid [max_output_size] bool) of kept boxes.

    Args:
      boxes: [N, 4] xyxy.
      scores: [N].
      valid: optional [N] bool; boxes marked False (padding, filtered out) are never kept and
        suppress nothing, as if they were not passed, and cost no loop step.
      iou_threshold: in (0, 1]; a box is dropped when its IoU with a kept, higher-scoring box
        is strictly greater.
      max_output_size: the fixed output length.

    The kept boxes come first, in descending score order, and are the same boxes in the same
    order as `torchvision.ops.nms(boxes, scores, iou_threshold)[:max_output_size]`. Entries
    past the kept ones have `valid` False and index 0.
    """
    boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    _check(boxes, scores, valid, iou_threshold, max_output_size)
    return _greedy_nms(boxes, scores, valid, iou_threshold, max_output_size)


def batched_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    classes: ArrayLike,
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices, valid) as `nms`, where boxes only suppress boxes of their own class.

    Args:
      boxes: [N, 4] xyxy.
      scores: [N].
      classes: [N] int class (or any group id) of each box.
      valid: optional [N] bool, as in `nms`.

    Same kept boxes, in descending score order, as `torchvision.ops.batched_nms`.

    Classes never suppress one another, so each loop step keeps the best surviving box of
    *every* class at once: the loop runs as often as the most boxes any one class keeps, not
    as often as all classes together keep. Time O(N log N + K_c * N) for K_c = the largest
    number of boxes kept in one class; memory O(N).
    """
    boxes, scores, classes = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes)
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    _check(boxes, scores, valid, iou_threshold, max_output_size)
    if classes.shape != scores.shape:
        raise ValueError(f"classes must have shape [N] = {scores.shape}, got {classes.shape}")
    num_boxes = boxes.shape[0]
    if num_boxes == 0:
        return jnp.zeros((max_output_size,), jnp.int32), jnp.zeros((max_output_size,), bool)
    # Class-major order, best first within a class: each class is one contiguous segment.
    index = jnp.arange(num_boxes, dtype=jnp.int32)
    _, _, by_class = jax.lax.sort((classes, -scores, index), num_keys=3)
    sorted_boxes = boxes[by_class]
    areas = box_area(sorted_boxes)
    sorted_classes = classes[by_class]
    segment = jnp.cumsum(
        jnp.concatenate(
            [jnp.zeros(1, jnp.int32), (sorted_classes[1:] != sorted_classes[:-1]).astype(jnp.int32)]
        )
    )

    def keep_leaders(state):
        alive, kept = state
        # The first surviving box of each class segment is that class's best.
        first = jax.ops.segment_min(
            jnp.where(alive, index, num_boxes), segment, num_segments=num_boxes
        )
        leader = first[segment]  # [N] the current best box of each box's class
        has_leader = leader < num_boxes
        leader = jnp.minimum(leader, num_boxes - 1)
        iou = _iou(sorted_boxes[leader], areas[leader], sorted_boxes, areas)
        is_leader = index == leader
        kept = kept | (is_leader & has_leader)
        alive = alive & ~is_leader & ~(has_leader & (iou > iou_threshold))
        return alive, kept

    _, kept = jax.lax.while_loop(
        lambda state: jnp.any(state[0]),
        keep_leaders,
        (valid[by_class], jnp.zeros((num_boxes,), bool)),
    )
    # Back to descending score order across classes, as torchvision returns them.
    kept = jnp.zeros((num_boxes,), bool).at[by_class].set(kept)
    order = _descending_order(scores)
    kept = kept[order]
    position = jnp.nonzero(kept, size=max_output_size, fill_value=0)[0]
    valid = jnp.arange(max_output_size) < jnp.sum(kept)
    return jnp.where(valid, order[position], 0).astype(jnp.int32), valid
