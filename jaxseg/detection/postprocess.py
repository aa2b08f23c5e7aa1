"""From network outputs to proposals and detections, with fixed output sizes.

One image per call (lift with `jax.vmap`), except `paste_detection_masks`, which takes a
batch of `Detections`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg import ops
from jaxseg.detection.structures import Detections


def select_proposals(
    objectness: ArrayLike,
    deltas: ArrayLike,
    anchors: ArrayLike,
    level_sizes: Sequence[int],
    image_size: tuple[int, int],
    *,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_threshold: float = 0.7,
    min_size: float = 1e-3,
    score_threshold: float = 0.0,
    nms: str = "auto",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (boxes [P, 4], scores [P], valid [P]) of one image, P = post_nms_top_n.

    Args:
      objectness: [A] logits of all anchors, levels concatenated finest first.
      deltas: [A, 4] predicted deltas (box coder weights 1, 1, 1, 1).
      anchors: [A, 4] xyxy anchors in the same order.
      level_sizes: the number of anchors of each level (static), summing to A.
      image_size: (height, width) to clip to.
      pre_nms_top_n: candidates kept per level before NMS (2000 train / 1000 test).
      post_nms_top_n: P, proposals kept after NMS.
      nms_threshold, min_size, score_threshold: 0.7, 1e-3 and 0.0 as torchvision.
      nms: the NMS algorithm, 'auto' (tiled on GPU/TPU; on CPU whichever is faster for
        the counts), 'greedy' or 'tiled' (see `jaxseg.ops.nms`); all keep the same boxes.

    torchvision's `RegionProposalNetwork.filter_proposals`: per-level top-k by objectness,
    decode and clip, drop boxes smaller than `min_size` and probabilities below
    `score_threshold`, NMS within each level, keep the best P. Scores are probabilities.
    No gradient flows back (torchvision detaches the proposals).
    """
    objectness = jax.lax.stop_gradient(jnp.asarray(objectness, jnp.float32))
    deltas = jax.lax.stop_gradient(jnp.asarray(deltas, jnp.float32))
    anchors = jnp.asarray(anchors, jnp.float32)
    if objectness.ndim != 1 or deltas.shape != (*objectness.shape, 4):
        raise ValueError(
            f"need objectness [A] and deltas [A, 4], got {objectness.shape}, {deltas.shape}"
        )
    if sum(level_sizes) != objectness.shape[0] or anchors.shape != deltas.shape:
        raise ValueError(
            f"level_sizes {list(level_sizes)} and anchors {anchors.shape} must cover the "
            f"{objectness.shape[0]} anchors"
        )
    picked, counts = [], []
    start = 0
    for size in level_sizes:
        k = min(pre_nms_top_n, size)
        _, top = jax.lax.top_k(objectness[start : start + size], k)
        picked.append(top + start)
        counts.append(k)
        start += size
    picked = jnp.concatenate(picked)  # [C] candidates, level by level
    boxes = ops.clip_boxes(ops.decode_boxes(deltas[picked], anchors[picked]), image_size)
    scores = jax.nn.sigmoid(objectness[picked])
    keep = ops.small_boxes_mask(boxes, min_size) & (scores >= score_threshold)
    index, valid = ops.segmented_nms(
        boxes,
        scores,
        counts,
        iou_threshold=nms_threshold,
        max_output_size=post_nms_top_n,
        valid=keep,
        method=nms,
    )
    return (
        jnp.where(valid[:, None], boxes[index], 0.0),
        jnp.where(valid, scores[index], 0.0),
        valid,
    )


def detect_boxes(
    class_logits: ArrayLike,
    box_regression: ArrayLike,
    proposals: ArrayLike,
    proposal_valid: ArrayLike,
    image_size: tuple[int, int],
    *,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
    min_size: float = 1e-2,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    nms: str = "auto",
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Returns (boxes [D, 4], scores [D], classes [D] int32, valid [D]) of one image.

    Args:
      class_logits: [R, K + 1] (0 = background); box_regression: [R, K + 1, 4].
      proposals: [R, 4] xyxy; proposal_valid: [R] bool.
      image_size: (height, width) to clip to.
      score_threshold, nms_threshold, detections_per_image, min_size: torchvision's
        0.05, 0.5, 100, 1e-2.
      weights: box coder weights.
      nms: the NMS algorithm, as in `select_proposals`.

    torchvision's `RoIHeads.postprocess_detections`: softmax, class-specific decode and
    clip, drop background, scores <= threshold and small boxes, per-class NMS, keep the
    D best. Candidates are ordered RoI-major, class-minor as torchvision flattens them.
    """
    class_logits = jnp.asarray(class_logits, jnp.float32)
    box_regression = jnp.asarray(box_regression, jnp.float32)
    num_rois, num_classes = class_logits.shape
    if box_regression.shape != (num_rois, num_classes, 4):
        raise ValueError(
            f"box_regression must be [R, K + 1, 4] = {(num_rois, num_classes, 4)}, got "
            f"{box_regression.shape}"
        )
    proposals = jnp.asarray(proposals, jnp.float32)
    boxes = ops.decode_boxes(box_regression, proposals[:, None, :], weights=tuple(weights))
    boxes = ops.clip_boxes(boxes, image_size)[:, 1:].reshape(-1, 4)  # [R * K, 4]
    scores = jax.nn.softmax(class_logits, axis=-1)[:, 1:].reshape(-1)
    classes = jnp.tile(jnp.arange(1, num_classes, dtype=jnp.int32), num_rois)
    keep = (
        (scores > score_threshold)
        & ops.small_boxes_mask(boxes, min_size)
        & jnp.repeat(jnp.asarray(proposal_valid, bool), num_classes - 1)
    )
    index, valid = ops.batched_nms(
        boxes,
        scores,
        classes,
        iou_threshold=nms_threshold,
        max_output_size=detections_per_image,
        valid=keep,
        method=nms,
    )
    return (
        jnp.where(valid[:, None], boxes[index], 0.0),
        jnp.where(valid, scores[index], 0.0),
        jnp.where(valid, classes[index], 0),
        valid,
    )


def paste_detection_masks(
    detections: Detections,
    image_size: tuple[int, int],
    *,
    scale: ArrayLike | None = None,
    threshold: float | None = None,
) -> jax.Array:
    """Returns [B, D, height, width] masks of the detections pasted into an image.

    Args:
      detections: a batch of `Detections` (masks [B, D, Hm, Wm] probabilities).
      image_size: (height, width) of the output, static.
      scale: optional [B] input pixels per output pixel (the loader's `scale`): boxes are
        divided by it, which maps canvas detections into the original image (the image
        sits at the canvas's top-left).
      threshold: if given, returns bool masks `probability >= threshold` (torchvision's
        0.5); otherwise float probabilities. Invalid detections paste nothing.

    torchvision's `paste_masks_in_image`, jit-friendly.
    """
    boxes = jnp.asarray(detections.boxes, jnp.float32)
    if scale is not None:
        boxes = boxes / jnp.asarray(scale, jnp.float32).reshape(-1, 1, 1)
    pasted = jax.vmap(lambda m, b: ops.paste_masks_in_image(m, b, image_size))(
        detections.masks, boxes
    )
    pasted = jnp.where(detections.valid[:, :, None, None], pasted, 0.0)
    return pasted >= threshold if threshold is not None else pasted


def rescale_detections(detections: Detections, scale: ArrayLike) -> Detections:
    """Returns `detections` with boxes divided by `scale` [B] (canvas -> original pixels)."""
    scale = jnp.asarray(scale, jnp.float32).reshape(-1, 1, 1)
    return detections.replace(boxes=detections.boxes / scale)
