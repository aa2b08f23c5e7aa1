"""Semantic segmentation metrics from a confusion matrix (FCN paper, section 5).

With `n[i, j]` the number of pixels of class i predicted as class j and `t_i = sum_j n[i, j]`:

- pixel accuracy `sum_i n[i, i] / sum_i t_i`;
- mean accuracy `mean_i n[i, i] / t_i`;
- mean IU `mean_i n[i, i] / (t_i + sum_j n[j, i] - n[i, i])`;
- frequency-weighted IU `sum_i t_i IU_i / sum_i t_i`.

Classes are left out of a mean where its term is undefined, as in the reference's
`score.py` (`np.nanmean`): mean accuracy averages over classes present in the ground
truth; mean IU over classes present in the ground truth or the prediction (a class only
predicted counts with IU 0). Per-class IU is NaN for a class absent from both.

`confusion_matrix` is jit-friendly and runs per batch on the device; sum its results on
the host in int64 and call `segmentation_metrics` once at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["confusion_matrix", "segmentation_metrics"]


def confusion_matrix(
    labels: ArrayLike, predictions: ArrayLike, *, num_classes: int, ignore_label: int = 255
) -> jax.Array:
    """Returns `[K, K]` int32 counts `n[i, j]` of pixels labelled i and predicted j.

    Args:
      labels: `[...]` integer ground truth; pixels labelled `ignore_label` or outside
        `[0, K)` are not counted.
      predictions: `[...]` integer predicted classes, the same shape (e.g. the argmax of
        `[B, H, W, K]` logits over K); values outside `[0, K)` are not counted either.
      num_classes: K.
      ignore_label: ground-truth label to leave out.
    """
    labels = jnp.asarray(labels)
    predictions = jnp.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(
            "confusion_matrix: labels and predictions must have the same shape, got "
            f"{labels.shape} and {predictions.shape}"
        )
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    labels = labels.reshape(-1).astype(jnp.int32)
    predictions = predictions.reshape(-1).astype(jnp.int32)
    valid = (
        (labels != ignore_label)
        & (labels >= 0)
        & (labels < num_classes)
        & (predictions >= 0)
        & (predictions < num_classes)
    )
    index = jnp.where(valid, labels * num_classes + predictions, 0)  # [pixels] in [0, K*K)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(valid.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def segmentation_metrics(confusion: ArrayLike) -> dict[str, float | list[float]]:
    """Returns the FCN paper's metrics of a `[K, K]` confusion matrix (rows ground truth).

    Returns:
      `{'pixel_accuracy', 'mean_accuracy', 'mean_iou', 'fw_iou'}` floats and
      `'per_class_iou'`, a list of K floats (NaN for classes absent from both ground truth
      and prediction). With no counted pixel at all every value is NaN.
    """
    n = np.asarray(confusion, dtype=np.float64)
    if n.ndim != 2 or n.shape[0] != n.shape[1]:
        raise ValueError(f"segmentation_metrics: confusion must be [K, K], got shape {n.shape}")
    true_positives = np.diag(n)  # [K]
    ground_truth = n.sum(axis=1)  # [K] t_i
    predicted = n.sum(axis=0)  # [K]
    union = ground_truth + predicted - true_positives
    total = ground_truth.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = true_positives / ground_truth  # NaN where t_i = 0
        iou = true_positives / union  # NaN where absent from both
        pixel_accuracy = true_positives.sum() / total if total else np.nan
    present = ground_truth > 0
    return {
        "pixel_accuracy": float(pixel_accuracy),
        "mean_accuracy": _nanmean(accuracy),
        "mean_iou": _nanmean(iou),
        "fw_iou": float((ground_truth[present] * iou[present]).sum() / total) if total else np.nan,
        "per_class_iou": [float(v) for v in iou],
    }


def _nanmean(values: np.ndarray) -> float:
    """Returns the mean of the non-NaN entries of `values`, NaN if there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")
