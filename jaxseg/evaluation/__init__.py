"""Evaluation: segmentation metrics from confusion matrices."""

from jaxseg.evaluation.segmentation import confusion_matrix, segmentation_metrics

__all__ = ["confusion_matrix", "segmentation_metrics"]
