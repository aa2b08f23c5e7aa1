"""Training targets for the RPN, the box head and the mask head, for one image.

Every function handles one image with static shapes; lift over a batch with `jax.vmap`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg import ops
from jaxseg.detection.matcher import BETWEEN_THRESHOLDS, match
from jaxseg.detection.sampler import sample_balanced
from jaxseg.detection.structures import MASK_FORMATS, RoISamples


def _safe_encode(boxes, reference, weights, use):
    """Encoded deltas where `use`, 0 elsewhere (so no log(0) of an unused pair leaks out)."""
    ok = use & (ops.box_area(boxes) > 0) & (ops.box_area(reference) > 0)
    fallback = jnp.asarray([0.0, 0.0, 1.0, 1.0], boxes.dtype)
    deltas = ops.encode_boxes(
        jnp.where(ok[:, None], boxes, fallback),
        jnp.where(ok[:, None], reference, fallback),
        weights=weights,
    )
    return jnp.where(ok[:, None], deltas, 0.0)


def rpn_targets(
    anchors: ArrayLike,
    gt_boxes: ArrayLike,
    gt_valid: ArrayLike,
    *,
    fg_iou_threshold: float = 0.7,
    bg_iou_threshold: float = 0.3,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> tuple[jax.Array, jax.Array]:
    """Returns (labels [A] int32, deltas [A, 4] float32) of the anchors of one image.

    Args:
      anchors: [A, 4] xyxy, input pixels.
      gt_boxes: [N, 4] xyxy; gt_valid: [N] bool.
      fg_iou_threshold, bg_iou_threshold: torchvision's 0.7 / 0.3.
      weights: box coder weights (torchvision's RPN uses 1, 1, 1, 1).

    Labels: 1 foreground (IoU >= 0.7, or an anchor of highest IoU with some ground truth),
    0 background (IoU < 0.3), -1 ignored. Deltas encode the matched ground truth relative
    to the anchor (0 for non-foreground).
    """
    anchors, gt_boxes = jnp.asarray(anchors, jnp.float32), jnp.asarray(gt_boxes, jnp.float32)
    matched = match(
        ops.box_iou(gt_boxes, anchors),
        gt_valid,
        high_threshold=fg_iou_threshold,
        low_threshold=bg_iou_threshold,
        allow_low_quality_matches=True,
    )
    labels = jnp.where(matched >= 0, 1, jnp.where(matched == BETWEEN_THRESHOLDS, -1, 0))
    matched_boxes = gt_boxes[jnp.maximum(matched, 0)]
    deltas = _safe_encode(matched_boxes, anchors, tuple(weights), matched >= 0)
    return labels.astype(jnp.int32), deltas


def sample_rois(
    key: jax.Array,
    proposals: ArrayLike,
    proposal_valid: ArrayLike,
    gt_boxes: ArrayLike,
    gt_classes: ArrayLike,
    gt_valid: ArrayLike,
    *,
    iou_threshold: float = 0.5,
    num_samples: int = 512,
    positive_fraction: float = 0.25,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> RoISamples:
    """Returns the `num_samples` RoIs of one image for the box and mask heads (no batch axis).

    Args:
      key: PRNG key for the sampler.
      proposals: [P, 4] xyxy; proposal_valid: [P] bool.
      gt_boxes: [N, 4]; gt_classes: [N] int 1..K; gt_valid: [N] bool.
      iou_threshold: foreground at IoU >= 0.5, background below (torchvision's RoI heads).
      num_samples, positive_fraction: 512 and 0.25.
      weights: box coder weights, (10, 10, 5, 5).

    torchvision's `select_training_samples`: the ground-truth boxes are appended to the
    proposals (so every valid instance has a perfect RoI), the candidates are matched and
    sampled; positives come first in the result. Gradients are stopped.
    """
    proposals, gt_boxes = jnp.asarray(proposals, jnp.float32), jnp.asarray(gt_boxes, jnp.float32)
    gt_valid = jnp.asarray(gt_valid, bool)
    candidates = jax.lax.stop_gradient(jnp.concatenate([proposals, gt_boxes]))  # [P + N, 4]
    candidate_valid = jnp.concatenate([jnp.asarray(proposal_valid, bool), gt_valid])
    matched = match(
        ops.box_iou(gt_boxes, candidates),
        gt_valid,
        high_threshold=iou_threshold,
        low_threshold=iou_threshold,
    )
    foreground = matched >= 0
    gt_index = jnp.maximum(matched, 0)
    classes = jnp.asarray(gt_classes, jnp.int32)[gt_index]
    labels = jnp.where(foreground, classes, 0)
    labels = jnp.where(candidate_valid, labels, -1)  # invalid candidates are never sampled
    index, valid, _ = sample_balanced(
        key, labels, num_samples=num_samples, positive_fraction=positive_fraction
    )
    boxes = candidates[index]
    labels = jnp.where(valid, labels[index], 0)
    matched = jnp.where(labels > 0, gt_index[index], 0)
    box_targets = _safe_encode(gt_boxes[matched], boxes, tuple(weights), labels > 0)
    return RoISamples(
        boxes=boxes, labels=labels, box_targets=box_targets, matched=matched, valid=valid
    )


def mask_targets(
    gt_masks: ArrayLike,
    gt_boxes: ArrayLike,
    rois: ArrayLike,
    matched: ArrayLike,
    *,
    mask_format: str = "crop",
    output_size: int = 28,
    sampling_ratio: int = -1,
    aligned: bool = False,
    max_sampling_ratio: int = ops.DEFAULT_MASK_MAX_SAMPLING_RATIO,
) -> jax.Array:
    """Returns [R, output_size, output_size] float32 mask targets of RoIs of one image.

    Args:
      gt_masks: 'canvas': [N, H, W] 0/1 masks at input resolution; 'crop': [N, M, M] masks
        cut to each instance's box and resampled to M x M (`jaxseg.data`'s default).
      gt_boxes: [N, 4] xyxy instance boxes (the frames of the crops).
      rois: [R, 4] xyxy RoIs; matched: [R] int instance of each RoI.
      mask_format: 'crop' or 'canvas'.
      output_size, sampling_ratio, aligned, max_sampling_ratio: the RoIAlign that cuts the
        targets (`ops.roi_mask_targets`); the defaults are torchvision's adaptive sampling.

    'canvas' is torchvision's `project_masks_on_boxes` (RoIAlign of the instance mask on
    the RoI). 'crop' samples the same points from the crop instead: a RoI is mapped into
    its instance's crop frame, `u = (x - x1) * M / (x2 - x1)`, and RoIAligned there. This
    approximates the canvas targets in two ways: the crop is the mask already resampled to
    M x M (detail finer than (x2 - x1) / M input pixels is lost), and samples up to one crop
    cell outside the instance box read the crop's border cell instead of 0.
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    gt_masks = jnp.asarray(gt_masks)
    rois = jax.lax.stop_gradient(jnp.asarray(rois, jnp.float32))
    matched = jnp.asarray(matched, jnp.int32)
    if mask_format == "canvas":
        return ops.roi_mask_targets(
            gt_masks,
            rois,
            matched,
            output_size,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            max_sampling_ratio=max_sampling_ratio,
        )
    if gt_masks.ndim != 3 or gt_masks.shape[1] != gt_masks.shape[2]:
        raise ValueError(f"crop masks must be [N, M, M], got {gt_masks.shape}")
    size = gt_masks.shape[-1]
    frame = jnp.asarray(gt_boxes, jnp.float32)[matched]  # [R, 4]
    scale = size / jnp.maximum(frame[:, 2:] - frame[:, :2], 1e-6)  # [R, 2] crop cells / pixel
    # aligned=False samples the point half a pixel further on (torchvision's convention);
    # RoIAlign on the crop with aligned=True then reads the crop at the same place.
    shift = 0.0 if aligned else 0.5
    origin = jnp.tile(frame[:, :2], 2)
    in_crop = (rois + shift - origin) * jnp.tile(scale, 2)
    # The adaptive grid follows the RoI's size in input pixels, as on the canvas.
    grid = ops.adaptive_sampling_grid(rois, output_size, aligned=aligned)
    return ops.roi_mask_targets(
        gt_masks,
        in_crop,
        matched,
        output_size,
        sampling_ratio=sampling_ratio,
        aligned=True,
        max_sampling_ratio=max_sampling_ratio,
        sampling_grid=grid if sampling_ratio <= 0 else None,
    )
