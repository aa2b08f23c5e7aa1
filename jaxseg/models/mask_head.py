"""The Mask R-CNN mask head: four 3x3 convs, a 2x transposed conv, per-class mask logits.

Names map onto torchvision's `roi_heads.mask_head.{0..3}.0` (`mask_fcn1..4` here) and
`roi_heads.mask_predictor.{conv5_mask, mask_fcn_logits}`. Flax's `ConvTranspose` does not
flip its kernel: `conv5_mask` kernel [kh, kw, in, out] = torch weight [in, out, kh, kw]
permuted (2, 3, 0, 1) and flipped in kh and kw (tested against torchvision).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), bias 0.
_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class MaskHead(nn.Module, kw_only=True):
    """Returns mask logits [R, 2 * S, 2 * S, K + 1] float32 of pooled features [R, S, S, C].

    Attributes:
      num_classes: K + 1, background included (torchvision's `num_classes`).
      channels: of the four convs and the transposed conv (256).
      num_convs: 4.
      dtype: compute dtype.
    """

    num_classes: int
    channels: int = 256
    num_convs: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [R, 14, 14, C] RoI features; returns [R, 28, 28, K + 1]."""
        for i in range(self.num_convs):
            x = nn.relu(
                nn.Conv(
                    self.channels,
                    (3, 3),
                    padding=1,
                    kernel_init=_INIT,
                    dtype=self.dtype,
                    name=f"mask_fcn{i + 1}",
                )(x)
            )
        x = nn.relu(
            nn.ConvTranspose(
                self.channels,
                (2, 2),
                strides=(2, 2),
                padding="VALID",
                kernel_init=_INIT,
                dtype=self.dtype,
                name="conv5_mask",
            )(x)
        )
        x = nn.Conv(
            self.num_classes, (1, 1), kernel_init=_INIT, dtype=self.dtype, name="mask_fcn_logits"
        )(x)
        return x.astype(jnp.float32)
