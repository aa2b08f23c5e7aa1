"""Evaluation: segmentation metrics from confusion matrices, COCO AP through pycocotools."""

from jaxseg.evaluation.coco import (
    coco_evaluate,
    coco_ground_truth,
    detections_to_coco,
    paste_masks_original,
)
from jaxseg.evaluation.segmentation import confusion_matrix, segmentation_metrics

__all__ = [
    "coco_evaluate",
    "coco_ground_truth",
    "confusion_matrix",
    "detections_to_coco",
    "paste_masks_original",
    "segmentation_metrics",
]
