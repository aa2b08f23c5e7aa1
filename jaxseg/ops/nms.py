"""Non-maximum suppression with a fixed-size output, jit- and vmap-friendly.

Greedy NMS as in torchvision: boxes are visited in descending score order (ties by lower
index, torchvision's stable sort) and each kept box removes every later box whose IoU with
it is strictly greater than the threshold (compared as a double, as torchvision does; see
`jaxseg.ops.suppression`).

Two algorithms give that same result, chosen by `method`:

- 'greedy' (here): the visit jumps straight to the next surviving box, so the loop runs
  once per *kept* box and stops after `max_output_size`: time O(N log N + K * N), memory
  O(N), for N boxes and K = min(kept, max_output_size). The fastest on CPU, but K
  sequential steps (up to 2000 per image for the RPN's proposals in training).
- 'tiled' (`jaxseg.ops.tiled_nms`): blocks of boxes against tiles of IoUs, at most
  ceil(N / 512) outer steps of fixed work; for accelerators.
- 'auto' (the default): 'tiled' on GPU and TPU. On CPU, 'greedy' when more than a quarter
  of the boxes may be kept (max_output_size > N / 4), 'tiled' otherwise: the tiled loop
  stops after the first tiles that hold `max_output_size` kept boxes, where every greedy
  step still scans all N (benchmarks/nms.py, BENCHMARKS.md "NMS": greedy up to 2-3x faster
  when all boxes are asked for; tiled 1.5-4x faster at N = 4000-10000 with
  max_output_size 1000; near 2x fewer outputs than boxes the two are within noise).
  The platform is decided at lowering time by `jax.lax.platform_dependent`, so that a
  program compiled for a TPU on a CPU-only host gets the tiled one.

`segmented_nms` is `batched_nms` for groups that are static contiguous segments (the RPN's
levels): tiled, the segments run side by side, so its sequential depth is one segment's.
"""

from collections.abc import Sequence

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
from jaxseg.ops.tiled_nms import tiled_batched_nms, tiled_nms

NMS_METHODS = ("auto", "greedy", "tiled")


def _greedy_is_faster_on_cpu(num_boxes: int, max_output_size: int) -> bool:
    """Whether 'auto' picks greedy NMS on CPU: when more than a quarter may be kept."""
    return 4 * max_output_size > num_boxes


def check_nms_method(method: str, name: str = "method") -> None:
    """Raises ValueError unless `method` is one of `NMS_METHODS`."""
    if method not in NMS_METHODS:
        raise ValueError(f"{name} must be one of {NMS_METHODS}, got {method!r}")


def _nms_arguments(boxes, scores, valid, iou_threshold, max_output_size, method):
    """The checked (boxes, scores, valid) every NMS entry point starts from."""
    boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
    valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
    check_nms_inputs(boxes, scores, valid, iou_threshold, max_output_size)
    check_nms_method(method)
    return boxes, scores, valid


def _run_method(method, max_output_size, greedy, tiled, boxes, *operands):
    """Calls `greedy` or `tiled` on (boxes, *operands) as `method` chooses (see `nms`)."""
    num_boxes = boxes.shape[0]
    if method == "greedy" or num_boxes == 0:
        return greedy(boxes, *operands)
    if method == "tiled" or not _greedy_is_faster_on_cpu(num_boxes, max_output_size):
        return tiled(boxes, *operands)
    return jax.lax.platform_dependent(boxes, *operands, cpu=greedy, default=tiled)


def _greedy_nms(
    boxes: jax.Array,
    scores: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS, one loop step per kept box, stopping at `max_output_size`."""
    num_boxes = boxes.shape[0]
    if num_boxes == 0:
        return jnp.zeros((max_output_size,), jnp.int32), jnp.zeros((max_output_size,), bool)
    order = descending_order(scores)
    boxes = upcast_boxes(boxes)[order]
    areas = box_areas(boxes)  # outside the loop: see jaxseg.ops.suppression

    def not_done(state):
        count, alive, _ = state
        return (count < max_output_size) & jnp.any(alive)

    def keep_next(state):
        count, alive, kept = state
        i = jnp.argmax(alive).astype(jnp.int32)  # the best surviving box
        suppress = exceeds(pair_iou(boxes[i], areas[i], boxes, areas), iou_threshold)
        alive = alive & ~suppress
        alive = alive.at[i].set(False)
        return count + 1, alive, kept.at[count].set(i)

    count, _, kept = jax.lax.while_loop(
        not_done,
        keep_next,
        (jnp.int32(0), valid[order], jnp.zeros((max_output_size,), jnp.int32)),
    )
    valid = jnp.arange(max_output_size) < count
    return jnp.where(valid, order[kept], 0).astype(jnp.int32), valid


def _greedy_batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_output_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Greedy per-class NMS, one loop step per box kept in the fullest class.

    Stops early once `max_output_size` kept boxes score above every undecided box: those
    are the output, whatever the rest of the classes keep.
    """
    num_boxes = boxes.shape[0]
    if num_boxes == 0:
        return jnp.zeros((max_output_size,), jnp.int32), jnp.zeros((max_output_size,), bool)
    # Class-major order, best first within a class: each class is one contiguous segment.
    index = jnp.arange(num_boxes, dtype=jnp.int32)
    key = jnp.where(scores == 0, jnp.zeros_like(scores), -scores)
    _, _, by_class = jax.lax.sort((classes, key, index), num_keys=3)
    sorted_boxes = upcast_boxes(boxes)[by_class]
    areas = box_areas(sorted_boxes)  # outside the loop: see jaxseg.ops.suppression
    sorted_classes = classes[by_class]
    sorted_key = key[by_class]  # -score
    key_max = jnp.max(key)
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
        iou = pair_iou(sorted_boxes[leader], areas[leader], sorted_boxes, areas)
        is_leader = index == leader
        kept = kept | (is_leader & has_leader)
        alive = alive & ~is_leader & ~(has_leader & exceeds(iou, iou_threshold))
        return alive, kept

    def undecided(state):
        alive, kept = state
        # Kept boxes that outscore every alive one are final and ahead of all to come.
        best_alive = jnp.min(jnp.where(alive, sorted_key, key_max))
        final = jnp.sum(kept & (sorted_key < best_alive))
        return jnp.any(alive) & (final < max_output_size)

    _, kept = jax.lax.while_loop(
        undecided,
        keep_leaders,
        (valid[by_class], jnp.zeros((num_boxes,), bool)),
    )
    # Back to descending score order across classes, as torchvision returns them.
    kept = jnp.zeros((num_boxes,), bool).at[by_class].set(kept)
    order = descending_order(scores)
    kept = kept[order]
    position = jnp.nonzero(kept, size=max_output_size, fill_value=0)[0]
    valid = jnp.arange(max_output_size) < jnp.sum(kept)
    return jnp.where(valid, order[position], 0).astype(jnp.int32), valid


def nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
    method: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices [max_output_size] int32, valid [max_output_size] bool) of kept boxes.

    Args:
      boxes: [N, 4] xyxy, any real dtype (integer and 16-bit float boxes are computed in
        float32, so their areas cannot overflow).
      scores: [N].
      valid: optional [N] bool; boxes marked False (padding, filtered out) are never kept and
        suppress nothing, as if they were not passed, and cost no loop step.
      iou_threshold: in (0, 1]; a box is dropped when its IoU with a kept, higher-scoring box
        is strictly greater (the threshold taken as a double, as torchvision does).
      max_output_size: the fixed output length.
      method: 'auto' (tiled on GPU/TPU; on CPU greedy when max_output_size > N / 4, else
        tiled), 'greedy' or 'tiled'; see the module docstring. All three return the same.

    The kept boxes come first, in descending score order, and are the same boxes in the same
    order as `torchvision.ops.nms(boxes, scores, iou_threshold)[:max_output_size]`. Entries
    past the kept ones have `valid` False and index 0.
    """
    boxes, scores, valid = _nms_arguments(
        boxes, scores, valid, iou_threshold, max_output_size, method
    )

    def greedy(b, s, v):
        return _greedy_nms(b, s, v, iou_threshold, max_output_size)

    def tiled(b, s, v):
        return tiled_nms(
            b, s, iou_threshold=iou_threshold, max_output_size=max_output_size, valid=v
        )

    return _run_method(method, max_output_size, greedy, tiled, boxes, scores, valid)


def batched_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    classes: ArrayLike,
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
    method: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices, valid) as `nms`, where boxes only suppress boxes of their own class.

    Args:
      boxes: [N, 4] xyxy.
      scores: [N].
      classes: [N] int class (or any group id) of each box.
      valid: optional [N] bool, as in `nms`.
      method: 'auto', 'greedy' or 'tiled', as in `nms`.

    Same kept boxes, in descending score order, as `torchvision.ops.batched_nms`.

    Classes never suppress one another, so each greedy loop step keeps the best surviving
    box of *every* class at once: the loop runs as often as the most boxes any one class
    keeps, not as often as all classes together keep, and stops once `max_output_size`
    kept boxes outscore every undecided one. Time O(N log N + K_c * N) for K_c = the
    largest number of boxes kept in one class; memory O(N).
    """
    boxes, scores, valid = _nms_arguments(
        boxes, scores, valid, iou_threshold, max_output_size, method
    )
    classes = jnp.asarray(classes)
    if classes.shape != scores.shape:
        raise ValueError(f"classes must have shape [N] = {scores.shape}, got {classes.shape}")

    def greedy(b, s, c, v):
        return _greedy_batched_nms(b, s, c, v, iou_threshold, max_output_size)

    def tiled(b, s, c, v):
        return tiled_batched_nms(
            b, s, c, iou_threshold=iou_threshold, max_output_size=max_output_size, valid=v
        )

    return _run_method(method, max_output_size, greedy, tiled, boxes, scores, classes, valid)


def segmented_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    segment_sizes: Sequence[int],
    *,
    iou_threshold: float,
    max_output_size: int,
    valid: ArrayLike | None = None,
    method: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Returns (indices, valid) as `batched_nms` with each contiguous segment a class.

    Args:
      boxes: [N, 4] xyxy; scores: [N]; valid: optional [N] bool, as in `nms`.
      segment_sizes: static lengths of the segments, summing to N (the RPN's levels).
      method: 'auto', 'greedy' or 'tiled', as in `nms`.

    The same result as `batched_nms(boxes, scores, segment ids, ...)`. With 'tiled' (and
    'auto' on GPU / TPU) the segments run side by side, one tiled NMS each, padded to the
    longest, and their kept boxes are merged by score: the sequential depth is that of one
    segment (RPN training at 1024 px: 2000 boxes per level instead of 8768 in one loop,
    4 outer steps instead of 18). 'greedy', and 'auto' on CPU, are `batched_nms`'s.
    """
    boxes, scores, valid = _nms_arguments(
        boxes, scores, valid, iou_threshold, max_output_size, method
    )
    sizes = [int(n) for n in segment_sizes]
    if sum(sizes) != boxes.shape[0] or any(n < 1 for n in sizes):
        raise ValueError(
            f"segment_sizes must be positive and sum to the {boxes.shape[0]} boxes, got {sizes}"
        )

    def batched(b, s, v):
        segments = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        return batched_nms(
            b,
            s,
            jnp.asarray(segments),
            iou_threshold=iou_threshold,
            max_output_size=max_output_size,
            valid=v,
            method=method,
        )

    def side_by_side(b, s, v):
        return _segments_side_by_side(b, s, v, sizes, iou_threshold, max_output_size)

    if method == "greedy" or len(sizes) <= 1:
        return batched(boxes, scores, valid)
    if method == "tiled":
        return side_by_side(boxes, scores, valid)
    return jax.lax.platform_dependent(boxes, scores, valid, cpu=batched, default=side_by_side)


def _segments_side_by_side(boxes, scores, valid, sizes, iou_threshold, max_output_size):
    """Tiled NMS of each segment (vmapped over the segments, padded), merged by score."""
    longest = max(sizes)
    starts = np.cumsum([0, *sizes[:-1]])

    def padded(x, fill):  # [N, ...] -> [S, longest, ...]
        return jnp.stack(
            [
                jnp.pad(
                    x[a : a + n], [(0, longest - n)] + [(0, 0)] * (x.ndim - 1), constant_values=fill
                )
                for a, n in zip(starts, sizes, strict=True)
            ]
        )

    seg_boxes, seg_scores = padded(boxes, 0), padded(scores, 0)
    seg_valid = padded(valid, False)  # [S, longest]: padding is never kept

    def one(b, s, v):
        return tiled_nms(
            b, s, iou_threshold=iou_threshold, max_output_size=max_output_size, valid=v
        )

    index, kept = jax.vmap(one)(seg_boxes, seg_scores, seg_valid)  # [S, M] each
    # Each segment's kept boxes are in descending score order, ties by position, and the
    # segments lie in order, so sorting the flat list (ties by flat position) gives
    # batched_nms's global order.
    position = (index + jnp.asarray(starts, jnp.int32)[:, None]).reshape(-1)
    kept = kept.reshape(-1)
    order = descending_order(scores[position], kept)[:max_output_size]
    out_valid = kept[order]
    return jnp.where(out_valid, position[order], 0).astype(jnp.int32), out_valid
