"""Balanced sampling of a fixed number of positives and negatives, by sorting random keys."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def sample_balanced(
    key: jax.Array,
    labels: ArrayLike,
    *,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (indices [S] int32, valid [S] bool, is_positive [S] bool), S = num_samples.

    Args:
      key: PRNG key.
      labels: [M] int; > 0 positive, 0 negative, < 0 ignored (never sampled).
      num_samples: S, the fixed number of slots.
      positive_fraction: at most `int(S * positive_fraction)` positives.

    torchvision's `BalancedPositiveNegativeSampler` with static shapes: n_pos =
    min(#positives, int(S * fraction)) positives and n_neg = min(#negatives, S - n_pos)
    negatives, each chosen uniformly without replacement (the largest random keys). The
    positives fill the first n_pos slots, the negatives the next n_neg; the remaining
    slots are `valid == False` (index 0).
    """
    labels = jnp.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be [M], got {labels.shape}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    size = labels.shape[0]
    k = min(num_samples, size)
    positive, negative = labels > 0, labels == 0
    u = jax.random.uniform(key, (size,))
    # Eligible entries get keys in [0, 1), the others -1: top_k picks a random subset.
    _, pos_order = jax.lax.top_k(jnp.where(positive, u, -1.0), k)
    _, neg_order = jax.lax.top_k(jnp.where(negative, u, -1.0), k)
    num_pos = jnp.minimum(jnp.sum(positive), int(num_samples * positive_fraction))
    num_neg = jnp.minimum(jnp.sum(negative), num_samples - num_pos)
    slot = jnp.arange(num_samples)
    from_pos = slot < num_pos
    neg_slot = jnp.clip(slot - num_pos, 0, k - 1)
    pos_slot = jnp.clip(slot, 0, k - 1)
    indices = jnp.where(from_pos, pos_order[pos_slot], neg_order[neg_slot])
    valid = slot < num_pos + num_neg
    return (
        jnp.where(valid, indices, 0).astype(jnp.int32),
        valid,
        from_pos & valid,
    )
