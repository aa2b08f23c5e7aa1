"""Per-pixel softmax cross-entropy for semantic segmentation, with an ignore label."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxseg import IGNORE_LABEL

__all__ = ["IGNORE_LABEL", "softmax_cross_entropy"]


_REDUCTIONS = ("mean", "sum")


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    ignore_label: int = IGNORE_LABEL,
    reduction: str = "mean",
) -> jax.Array:
    """Returns the scalar float32 softmax cross-entropy over the valid pixels.

    Args:
      logits: `[B, H, W, K]` (any float dtype; computed in float32).
      labels: `[B, H, W]` integer class ids. Pixels whose label is `ignore_label` or
        outside `[0, K)` are left out.
      ignore_label: the label to leave out.
      reduction: 'mean' divides the sum by the number of valid pixels (0 when there are
        none, never NaN); 'sum' is the FCN reference's loss, summed over pixels and images.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 4 or labels.shape != logits.shape[:3]:
        raise ValueError(
            "softmax_cross_entropy: logits must be [B, H, W, K] and labels [B, H, W], got "
            f"shapes {logits.shape} and {labels.shape}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"softmax_cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
        )
    num_classes = logits.shape[-1]
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)  # [B, H, W]
    safe_labels = jnp.where(valid, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels
    )  # [B, H, W]
    total = jnp.sum(jnp.where(valid, losses, 0.0))
    if reduction == "sum":
        return total
    return total / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
