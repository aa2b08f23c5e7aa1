"""Losses of Mask R-CNN, normalised as torchvision normalises them.

Each takes the whole batch with fixed-size samples and a `valid` mask, so the normalisers
(numbers of sampled anchors / RoIs) are counted over the batch as torchvision counts them
after concatenating the images. All arithmetic is float32.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

LOSS_NAMES = ("rpn_objectness", "rpn_box", "classifier", "box_reg", "mask")


def smooth_l1(x: ArrayLike, *, beta: float) -> jax.Array:
    """Returns elementwise smooth-L1 of `x`: 0.5 x^2 / beta below beta, |x| - beta / 2 above."""
    x = jnp.asarray(x, jnp.float32)
    ax = jnp.abs(x)
    if beta == 0:
        return ax
    return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def _count(valid: jax.Array) -> jax.Array:
    return jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)


def rpn_losses(
    objectness: ArrayLike,
    deltas: ArrayLike,
    labels: ArrayLike,
    target_deltas: ArrayLike,
    valid: ArrayLike,
    *,
    beta: float = 1.0 / 9,
) -> dict[str, jax.Array]:
    """Returns {'rpn_objectness', 'rpn_box'}: scalar losses over the sampled anchors.

    Args:
      objectness: [B, S] logits of the sampled anchors.
      deltas: [B, S, 4] predicted deltas; target_deltas: [B, S, 4].
      labels: [B, S] 1 foreground, 0 background.
      valid: [B, S] bool, sampled slots.

    torchvision's `RPN.compute_loss`: mean binary cross-entropy over the sampled anchors;
    smooth-L1 summed over the foreground ones and divided by the number sampled.
    """
    objectness = jnp.asarray(objectness, jnp.float32)
    labels = jnp.asarray(labels)
    valid = jnp.asarray(valid, bool)
    targets = (labels > 0).astype(jnp.float32)
    bce = (
        jnp.maximum(objectness, 0) - objectness * targets + jnp.log1p(jnp.exp(-jnp.abs(objectness)))
    )
    n = _count(valid)
    positive = valid & (labels > 0)
    box = smooth_l1(jnp.asarray(deltas, jnp.float32) - target_deltas, beta=beta).sum(-1)
    return {
        "rpn_objectness": jnp.sum(jnp.where(valid, bce, 0.0)) / n,
        "rpn_box": jnp.sum(jnp.where(positive, box, 0.0)) / n,
    }


def fast_rcnn_losses(
    class_logits: ArrayLike,
    box_regression: ArrayLike,
    labels: ArrayLike,
    box_targets: ArrayLike,
    valid: ArrayLike,
    *,
    beta: float = 1.0 / 9,
) -> dict[str, jax.Array]:
    """Returns {'classifier', 'box_reg'}: scalar losses over the sampled RoIs.

    Args:
      class_logits: [B, S, K + 1] (class 0 = background).
      box_regression: [B, S, K + 1, 4] class-specific deltas.
      labels: [B, S] int 0..K; box_targets: [B, S, 4]; valid: [B, S] bool.

    torchvision's `fastrcnn_loss`: mean cross-entropy over the sampled RoIs; smooth-L1 of
    the ground-truth class's deltas, summed over foreground RoIs and divided by the number
    of sampled RoIs.
    """
    class_logits = jnp.asarray(class_logits, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    valid = jnp.asarray(valid, bool)
    log_p = jax.nn.log_softmax(class_logits, axis=-1)
    ce = -jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    n = _count(valid)
    deltas = jnp.take_along_axis(
        jnp.asarray(box_regression, jnp.float32), labels[..., None, None], axis=-2
    )[..., 0, :]  # [B, S, 4]
    positive = valid & (labels > 0)
    box = smooth_l1(deltas - box_targets, beta=beta).sum(-1)
    return {
        "classifier": jnp.sum(jnp.where(valid, ce, 0.0)) / n,
        "box_reg": jnp.sum(jnp.where(positive, box, 0.0)) / n,
    }


def mask_loss(mask_logits: ArrayLike, targets: ArrayLike, valid: ArrayLike) -> jax.Array:
    """Returns the scalar mask loss: mean per-pixel BCE over the valid mask RoIs.

    Args:
      mask_logits: [B, R, Hm, Wm] logits of each RoI's ground-truth class channel.
      targets: [B, R, Hm, Wm] targets in [0, 1].
      valid: [B, R] bool (foreground RoIs).

    torchvision's `maskrcnn_loss`; 0 when there is no foreground RoI in the batch.
    """
    logits = jnp.asarray(mask_logits, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    valid = jnp.asarray(valid, bool)
    bce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    per_roi = jnp.mean(bce, axis=(-2, -1))  # [B, R]
    return jnp.sum(jnp.where(valid, per_roi, 0.0)) / _count(valid)


def total_loss(losses: Mapping[str, ArrayLike]) -> jax.Array:
    """Returns the sum of the scalar losses in `losses` (torchvision sums them unweighted)."""
    if not losses:
        raise ValueError("total_loss needs at least one loss")
    return sum(jnp.asarray(v, jnp.float32) for v in losses.values())
