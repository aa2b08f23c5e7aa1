"""The Fast R-CNN box head: two FC layers on pooled RoI features, class scores and deltas.

Names map onto torchvision's `roi_heads.box_head.{fc6, fc7}` and
`roi_heads.box_predictor.{cls_score, bbox_pred}` (kernels are `weight.T`). fc6 takes the
RoI features flattened channels last (y, x, c); torchvision flattens (c, y, x), so a
converter permutes fc6's input rows.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch.nn.Linear's default: kaiming_uniform_(a=sqrt(5)), i.e. variance 1 / (3 fan_in).
_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform")


class TwoMLPHead(nn.Module, kw_only=True):
    """Returns [R, representation_size]: ReLU(fc7(ReLU(fc6(flattened RoI features))))."""

    representation_size: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [R, oh, ow, C] pooled features."""
        x = x.reshape(x.shape[0], -1)  # [R, oh * ow * C]
        for name in ("fc6", "fc7"):
            x = nn.relu(
                nn.Dense(
                    self.representation_size, kernel_init=_LINEAR_INIT, dtype=self.dtype, name=name
                )(x)
            )
        return x


class FastRCNNPredictor(nn.Module, kw_only=True):
    """Returns (class logits [R, K + 1], class-specific deltas [R, K + 1, 4]), float32.

    Attributes:
      num_classes: K + 1, background included (torchvision's `num_classes`).
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [R, D] box-head representations."""
        scores = nn.Dense(
            self.num_classes, kernel_init=_LINEAR_INIT, dtype=self.dtype, name="cls_score"
        )(x)
        deltas = nn.Dense(
            4 * self.num_classes, kernel_init=_LINEAR_INIT, dtype=self.dtype, name="bbox_pred"
        )(x)
        return (
            scores.astype(jnp.float32),
            deltas.astype(jnp.float32).reshape(x.shape[0], self.num_classes, 4),
        )
