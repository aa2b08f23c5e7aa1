"""Feature Pyramid Network (Lin et al. 2017) on C2..C5, with P6 by max-pooling P5.

Layer names map 1:1 onto torchvision's `backbone.fpn` (kernels `weight.permute(2, 3, 1, 0)`):

    inner_blocks_{i}  <- fpn.inner_blocks.{i}.0   (1x1 lateral convs, C2..C5 -> C)
    layer_blocks_{i}  <- fpn.layer_blocks.{i}.0   (3x3 output convs)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.pointwise_conv import PointwiseConv

# torchvision initialises FPN convs with kaiming_uniform_(a=1): variance 1 / fan_in.
_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def upsample_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Returns `x [B, h, w, C]` resized to `[B, *size, C]` by torch's 'nearest' rule.

    Output pixel i reads input pixel floor(i * h / H), as `F.interpolate(mode='nearest')`.
    """
    height, width = size
    rows = np.floor(np.arange(height) * np.float32(x.shape[1] / height)).astype(np.int32)
    cols = np.floor(np.arange(width) * np.float32(x.shape[2] / width)).astype(np.int32)
    rows = np.minimum(rows, x.shape[1] - 1)
    cols = np.minimum(cols, x.shape[2] - 1)
    return x[:, rows][:, :, cols]


class FPN(nn.Module, kw_only=True):
    """Returns P2..P6 `[B, H / 2**l, W / 2**l, channels]` from C2..C5.

    Attributes:
      channels: output channels of every level (256).
      extra_max_pool: add P6 = max-pool of P5 with kernel 1, stride 2 (torchvision's
        `LastLevelMaxPool`), used by the RPN only.
      dtype: compute dtype; parameters stay float32.
    """

    channels: int = 256
    extra_max_pool: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
        """Runs the top-down pathway.

        Args:
          features: C2..C5 (any number >= 1 of maps), finest first, each `[B, H_l, W_l, C_l]`.

        Returns:
          P2..P5 (and P6) `[B, H_l, W_l, channels]`, finest first.
        """
        if not features or any(f.ndim != 4 for f in features):
            raise ValueError(
                f"FPN: features must be maps [B, H, W, C], got {[f.shape for f in features]}"
            )

        def conv(size, name):
            if size == 1:  # a matmul, the same parameters (see PointwiseConv)
                return PointwiseConv(
                    features=self.channels, kernel_init=_INIT, dtype=self.dtype, name=name
                )
            return nn.Conv(
                self.channels,
                (size, size),
                padding=size // 2,
                kernel_init=_INIT,
                dtype=self.dtype,
                name=name,
            )

        last = len(features) - 1
        inner = conv(1, f"inner_blocks_{last}")(features[last])
        results = [conv(3, f"layer_blocks_{last}")(inner)]
        for i in range(last - 1, -1, -1):
            lateral = conv(1, f"inner_blocks_{i}")(features[i])
            inner = lateral + upsample_nearest(inner, lateral.shape[1:3])
            results.insert(0, conv(3, f"layer_blocks_{i}")(inner))
        if self.extra_max_pool:
            results.append(results[-1][:, ::2, ::2])  # max_pool2d(kernel 1, stride 2)
        return results
