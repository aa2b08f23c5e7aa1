"""Assigning each prediction (anchor, proposal) to a ground-truth box by IoU.

The semantics of torchvision's `det_utils.Matcher`, on a padded ground truth: a prediction
is matched to the ground truth it overlaps most; it is background below `low`, ignored in
[low, high), and with `allow_low_quality_matches` every ground truth also keeps the
predictions that overlap it most, whatever their IoU.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match(
    quality: ArrayLike,
    gt_valid: ArrayLike,
    *,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool = False,
) -> jax.Array:
    """Returns [M] int32: the matched ground truth of each prediction, or -1 / -2.

    Args:
      quality: [N, M] match quality (IoU) of N ground-truth boxes and M predictions.
      gt_valid: [N] bool; padded ground truth (False) never matches anything.
      high_threshold: quality >= high is a match (foreground).
      low_threshold: quality < low gives `BELOW_LOW_THRESHOLD` (-1, background); in
        [low, high) `BETWEEN_THRESHOLDS` (-2, ignored).
      allow_low_quality_matches: for each valid ground truth, the predictions of highest
        quality with it get their best match back even below `high_threshold`.

    The same result as `torchvision.models.detection._utils.Matcher` on the valid rows, with
    one deliberate difference: a ground truth whose best quality is 0 (it overlaps no
    prediction, e.g. a box of zero area) claims no low-quality matches, where torchvision
    would restore the best match of every prediction of quality 0. With no valid ground
    truth every prediction is -1.
    """
    quality, gt_valid = jnp.asarray(quality), jnp.asarray(gt_valid, bool)
    if quality.ndim != 2:
        raise ValueError(
            f"quality must be [N, M] (ground truth x predictions), got {quality.shape}"
        )
    if gt_valid.shape != quality.shape[:1]:
        raise ValueError(f"gt_valid must be [N] = {quality.shape[:1]}, got {gt_valid.shape}")
    if not low_threshold <= high_threshold:
        raise ValueError(
            f"need low_threshold <= high_threshold, got {low_threshold}, {high_threshold}"
        )
    # Padded rows sit below any real IoU, so they never win the argmax.
    quality = jnp.where(gt_valid[:, None], quality, -1.0)
    best = jnp.max(quality, axis=0)  # [M]
    best_gt = jnp.argmax(quality, axis=0).astype(jnp.int32)  # [M], first of equals
    matches = jnp.where(best < low_threshold, BELOW_LOW_THRESHOLD, best_gt)
    matches = jnp.where(
        (best >= low_threshold) & (best < high_threshold), BETWEEN_THRESHOLDS, matches
    )
    if allow_low_quality_matches:
        best_per_gt = jnp.max(quality, axis=1, keepdims=True)  # [N, 1]
        claims = (quality == best_per_gt) & gt_valid[:, None] & (best_per_gt > 0)  # [N, M]
        matches = jnp.where(jnp.any(claims, axis=0), best_gt, matches)
    return matches.astype(jnp.int32)
