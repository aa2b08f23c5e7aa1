"""Pure functions of two-stage detection: matching, sampling, targets, losses, post-processing.

Per-image functions take one image's arrays with static shapes (lift with `jax.vmap`);
losses take the batch. Containers are `flax.struct` dataclasses padded with `valid` masks.
"""

from jaxseg.detection.losses import (
    LOSS_NAMES,
    fast_rcnn_losses,
    mask_loss,
    rpn_losses,
    smooth_l1,
    total_loss,
)
from jaxseg.detection.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, match
from jaxseg.detection.postprocess import (
    detect_boxes,
    paste_detection_masks,
    rescale_detections,
    select_proposals,
)
from jaxseg.detection.sampler import sample_balanced
from jaxseg.detection.structures import Detections, Instances, Proposals, RoISamples
from jaxseg.detection.targets import mask_targets, rpn_targets, sample_rois

__all__ = [
    "BELOW_LOW_THRESHOLD",
    "BETWEEN_THRESHOLDS",
    "LOSS_NAMES",
    "Detections",
    "Instances",
    "Proposals",
    "RoISamples",
    "detect_boxes",
    "fast_rcnn_losses",
    "mask_loss",
    "mask_targets",
    "match",
    "paste_detection_masks",
    "rescale_detections",
    "rpn_losses",
    "rpn_targets",
    "sample_balanced",
    "sample_rois",
    "select_proposals",
    "smooth_l1",
    "total_loss",
]
