"""VGG16 as the FCN reference builds it (Long, Shelhamer and Darrell's Caffe `net.py`).

Differences from the ImageNet classifier: `conv1_1` is padded by 100 (so that every input
size, however small, leaves at least one `fc6` output and the crops fit), max pools round up
(Caffe's ceil mode), and the fully connected layers are convolutions (fc6 7x7 VALID, fc7
1x1), so the network takes images of any size.

Parameter names and the torchvision `vgg16` state dict (same weights; only padding and
pooling differ)::

    conv1_1 <- features.0    conv3_1 <- features.10   conv4_3 <- features.21
    conv1_2 <- features.2    conv3_2 <- features.12   conv5_1 <- features.24
    conv2_1 <- features.5    conv3_3 <- features.14   conv5_2 <- features.26
    conv2_2 <- features.7    conv4_1 <- features.17   conv5_3 <- features.28
                             conv4_2 <- features.19
    fc6 <- classifier.0      fc7 <- classifier.3      (classifier.6, fc8, is not used)

with `kernel = weight.permute(2, 3, 1, 0)` for the 3x3 convs [3, 3, C_in, C_out];
`fc6/kernel = classifier.0.weight.reshape(4096, 512, 7, 7).permute(2, 3, 1, 0)`
[7, 7, 512, 4096] (torch flattens pool5 as C, H, W); `fc7/kernel =
classifier.3.weight.T[None, None]` [1, 1, 4096, 4096]; `bias = bias` throughout.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.models.patch_conv import PatchConv
from jaxseg.models.pointwise_conv import PointwiseConv

__all__ = ["VGG16", "max_pool_ceil", "scaled_channels"]

# (stage, number of 3x3 convs, channels at width 1.0)
_STAGES = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
_FC_CHANNELS = 4096

# From-scratch initialisation. Convs as torchvision's VGG (He, fan_out); fc6/fc7 He with
# fan_in, which keeps activations at scale for every width (torchvision's N(0, 0.01) for its
# Linear layers is tuned to the full-width fan-ins). Pretrained weights replace both.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_fc_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def scaled_channels(channels: int, width: float) -> int:
    """Returns `round(channels * width)`, at least 1: a layer's width under a multiplier."""
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    return max(1, round(channels * width))


def max_pool_ceil(x: jax.Array) -> jax.Array:
    """Returns `[B, ceil(H / 2), ceil(W / 2), C]`: 2x2 stride-2 max pool in Caffe's ceil mode.

    The windows do not overlap, so the pool is a reshape and a max: XLA differentiates that
    with a compare and a select, several times faster on CPU than the scatter that
    `nn.max_pool`'s gradient becomes. On GPU and TPU it is `lax.reduce_window`, whose
    gradient (select-and-scatter) they run natively, without the compare masks. Where a
    window holds several equal maxima the gradient is shared among them on CPU (torch, and
    `reduce_window` elsewhere, give it all to one); after a ReLU such ties are zeros, whose
    gradient the ReLU stops either way.
    """
    return jax.lax.platform_dependent(x, cpu=_max_pool_reshape, default=_max_pool_window)


def _ceil_padding(x: jax.Array) -> tuple[tuple[int, int], ...]:
    """A last window that hangs over the edge sees only the pixels that exist (-inf padding)."""
    return ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))


def _max_pool_reshape(x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    x = jnp.pad(x, _ceil_padding(x), constant_values=-jnp.inf)
    return x.reshape(batch, (height + 1) // 2, 2, (width + 1) // 2, 2, channels).max(axis=(2, 4))


def _max_pool_window(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), _ceil_padding(x)
    )


class VGG16(nn.Module, kw_only=True):
    """Returns the pool3, pool4 and fc7 features of the FCN reference's VGG16.

    Attributes:
      width: channel multiplier (1.0 is the real VGG16: 64 ... 512 conv, 4096 fc channels).
      dropout_rate: dropout after fc6 and fc7 (0.5 in the reference), active when training.
      batch_norm: BatchNorm between each 3x3 conv and its ReLU, as torchvision's `vgg16_bn`
        (not in the FCN reference; it lets a narrow network train from scratch quickly). The
        statistics live in the `batch_stats` collection, updated when training.
      dtype: compute dtype; parameters stay float32.
    """

    width: float = 1.0
    dropout_rate: float = 0.5
    batch_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: ArrayLike, *, train: bool = False) -> dict[str, jax.Array]:
        """Runs the backbone.

        Args:
          images: `[B, H, W, C]` (C = 3 for the pretrained weights).
          train: enables dropout (then needs a `'dropout'` rng) and, with `batch_norm`, batch
            statistics (then `batch_stats` must be mutable).

        Returns:
          `{'pool3': [B, H3, W3, 256w], 'pool4': [B, H4, W4, 512w], 'fc7': [B, H5 - 6,
          W5 - 6, 4096w]}` where, with `u = H + 198`, `H3 = ceil(u / 8)`, `H4 = ceil(u / 16)`,
          `H5 = ceil(u / 32)` (likewise for W); w is the width multiplier.
        """
        x = jnp.asarray(images, self.dtype)
        if x.ndim != 4:
            raise ValueError(f"VGG16: images must be [B, H, W, C], got shape {x.shape}")
        features = {}
        for stage, num_convs, channels in _STAGES:
            for i in range(1, num_convs + 1):
                first = (stage, i) == (1, 1)
                pad = 100 if first else 1
                # conv1_1 sees the image's 3 channels: a patch matmul (see PatchConv).
                x = (PatchConv if first else nn.Conv)(
                    features=scaled_channels(channels, self.width),
                    kernel_size=(3, 3),
                    padding=((pad, pad), (pad, pad)),
                    kernel_init=_conv_init,
                    dtype=self.dtype,
                    name=f"conv{stage}_{i}",
                )(x)
                if self.batch_norm:
                    x = nn.BatchNorm(
                        use_running_average=not train,
                        momentum=0.9,
                        dtype=self.dtype,
                        name=f"bn{stage}_{i}",
                    )(x)
                x = nn.relu(x)
            x = max_pool_ceil(x)
            features[f"pool{stage}"] = x
        fc_channels = scaled_channels(_FC_CHANNELS, self.width)
        fc = dict(padding="VALID", kernel_init=_fc_init, dtype=self.dtype)
        x = nn.Conv(fc_channels, (7, 7), name="fc6", **fc)(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        x = PointwiseConv(features=fc_channels, kernel_init=_fc_init, dtype=self.dtype, name="fc7")(
            x
        )
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        return {"pool3": features["pool3"], "pool4": features["pool4"], "fc7": x}
