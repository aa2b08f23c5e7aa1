"""Matcher: hand-made cases and torchvision's `det_utils.Matcher` on random IoU matrices."""

import jax
import numpy as np
import pytest

from jaxseg.detection import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, match

torch = pytest.importorskip("torch")
det_utils = pytest.importorskip("torchvision.models.detection._utils")


def test_hand_made_thresholds_and_low_quality():
    # 2 ground truths x 5 predictions.
    iou = np.array(
        [
            [0.9, 0.5, 0.1, 0.0, 0.2],
            [0.1, 0.6, 0.25, 0.0, 0.35],
        ],
        np.float32,
    )
    valid = np.array([True, True])
    plain = np.asarray(match(iou, valid, high_threshold=0.7, low_threshold=0.3))
    np.testing.assert_array_equal(
        plain, [0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS]
    )
    low = np.asarray(
        match(iou, valid, high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True)
    )
    # gt 1's best prediction (0.6, column 1) gets its best match (gt 1) back.
    np.testing.assert_array_equal(
        low, [0, 1, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS]
    )


def test_padded_ground_truth_never_matches():
    iou = np.array([[0.2, 0.8], [0.9, 0.95]], np.float32)  # row 1 is padding
    out = match(
        iou,
        np.array([True, False]),
        high_threshold=0.7,
        low_threshold=0.3,
        allow_low_quality_matches=True,
    )
    np.testing.assert_array_equal(np.asarray(out), [BELOW_LOW_THRESHOLD, 0])
    none = match(iou, np.array([False, False]), high_threshold=0.5, low_threshold=0.5)
    np.testing.assert_array_equal(np.asarray(none), [BELOW_LOW_THRESHOLD] * 2)


def test_zero_overlap_ground_truth_claims_nothing():
    iou = np.array([[0.0, 0.0, 0.0], [0.1, 0.8, 0.0]], np.float32)
    out = match(
        iou,
        np.array([True, True]),
        high_threshold=0.7,
        low_threshold=0.3,
        allow_low_quality_matches=True,
    )
    np.testing.assert_array_equal(np.asarray(out), [BELOW_LOW_THRESHOLD, 1, BELOW_LOW_THRESHOLD])


@pytest.mark.parametrize("allow_low", [False, True])
@pytest.mark.parametrize("high,low", [(0.7, 0.3), (0.5, 0.5)])
def test_matches_torchvision_on_random_matrices(allow_low, high, low):
    rng = np.random.default_rng(0)
    reference = det_utils.Matcher(high, low, allow_low_quality_matches=allow_low)
    jitted = jax.jit(
        lambda q, v: match(
            q, v, high_threshold=high, low_threshold=low, allow_low_quality_matches=allow_low
        )
    )
    m, rows = 50, 8  # one compiled shape; the real row count varies under the padding
    for trial in range(20):
        n = int(rng.integers(1, rows))
        quality = rng.uniform(0.01, 1.0, (n, m)).astype(np.float32)
        quality[rng.uniform(size=(n, m)) < 0.3] *= 0.2  # many low-quality entries
        if trial % 4 == 0:  # exact ties of a row's maximum
            quality[0, : m // 2] = quality[0].max()
        expected = reference(torch.from_numpy(quality)).numpy()
        # Padding appended below the real rows must change nothing.
        padded = np.concatenate([quality, rng.uniform(0, 1, (rows - n, m)).astype(np.float32)])
        valid = np.arange(rows) < n
        np.testing.assert_array_equal(np.asarray(jitted(padded, valid)), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="quality"):
        match(np.zeros((3,)), np.zeros((3,), bool), high_threshold=0.5, low_threshold=0.5)
    with pytest.raises(ValueError, match="gt_valid"):
        match(np.zeros((3, 2)), np.zeros((2,), bool), high_threshold=0.5, low_threshold=0.5)
    with pytest.raises(ValueError, match="low_threshold"):
        match(np.zeros((3, 2)), np.zeros((3,), bool), high_threshold=0.3, low_threshold=0.5)
