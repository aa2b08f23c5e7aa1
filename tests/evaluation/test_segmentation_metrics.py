"""Confusion matrix and the FCN paper's metrics, against hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.evaluation import confusion_matrix, segmentation_metrics

# 4 classes; class 3 is in neither ground truth nor prediction. 255 is ignored, wherever
# the prediction points.
LABELS = np.array([[0, 0, 0, 1], [1, 1, 2, 255], [2, 2, 0, 255]])
PREDICTIONS = np.array([[0, 0, 1, 1], [1, 2, 2, 0], [2, 0, 0, 3]])
# Rows ground truth, columns prediction, counted by hand from the arrays above.
HAND = np.array(
    [
        [3, 1, 0, 0],  # four 0s: predicted 0, 0, 1, 0
        [0, 2, 1, 0],  # three 1s: predicted 1, 1, 2
        [1, 0, 2, 0],  # three 2s: predicted 2, 2, 0
        [0, 0, 0, 0],
    ]
)


def test_confusion_matrix_by_hand():
    got = jax.jit(confusion_matrix, static_argnames="num_classes")(
        LABELS, PREDICTIONS, num_classes=4
    )
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, HAND)
    # Batched [B, H, W] input and predictions outside [0, K) are fine too.
    batched = confusion_matrix(
        np.stack([LABELS, LABELS]), np.stack([PREDICTIONS, PREDICTIONS + 9]), num_classes=4
    )
    np.testing.assert_array_equal(batched, HAND)


def test_metrics_by_hand():
    metrics = segmentation_metrics(HAND)
    assert metrics["pixel_accuracy"] == pytest.approx(7 / 10)
    # Per-class accuracy 3/4, 2/3, 2/3; class 3 has no ground truth and is left out.
    assert metrics["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    # IU = n_ii / (t_i + predicted_i - n_ii): 3/(4+4-3), 2/(3+3-2), 2/(3+3-2); class 3 NaN.
    ious = [3 / 5, 2 / 4, 2 / 4]
    np.testing.assert_allclose(metrics["per_class_iou"][:3], ious)
    assert np.isnan(metrics["per_class_iou"][3])
    assert metrics["mean_iou"] == pytest.approx(sum(ious) / 3)
    assert metrics["fw_iou"] == pytest.approx((4 * 3 / 5 + 3 * 2 / 4 + 3 * 2 / 4) / 10)


def test_a_class_only_predicted_counts_zero_in_mean_iou_not_in_mean_accuracy():
    confusion = np.array([[5, 1], [0, 0]])  # class 1 predicted once, never in ground truth
    metrics = segmentation_metrics(confusion)
    assert metrics["per_class_iou"] == [5 / 6, 0.0]
    assert metrics["mean_iou"] == pytest.approx(5 / 12)
    assert metrics["mean_accuracy"] == pytest.approx(5 / 6)
    assert metrics["fw_iou"] == pytest.approx(5 / 6)


def test_matches_the_reference_score_py_formulas():
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 50, size=(6, 6)).astype(np.float64)
    hist[4] = 0  # absent from ground truth, but predicted
    hist[5] = hist[:, 5] = 0  # absent from both
    metrics = segmentation_metrics(hist)
    with np.errstate(divide="ignore", invalid="ignore"):  # fcn.berkeleyvision.org score.py
        acc = np.diag(hist).sum() / hist.sum()
        mean_acc = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
    assert metrics["pixel_accuracy"] == pytest.approx(acc)
    assert metrics["mean_accuracy"] == pytest.approx(mean_acc)
    assert metrics["mean_iou"] == pytest.approx(np.nanmean(iu))
    assert metrics["fw_iou"] == pytest.approx((freq[freq > 0] * iu[freq > 0]).sum())


def test_nothing_counted_gives_nan_and_bad_shapes_raise():
    metrics = segmentation_metrics(np.zeros((3, 3), np.int64))
    assert all(
        np.isnan(metrics[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")
    )
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        segmentation_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(3, 3\)"):
        confusion_matrix(LABELS, PREDICTIONS[:, :3], num_classes=4)
