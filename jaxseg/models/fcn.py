"""FCN-32s, FCN-16s and FCN-8s on VGG16 (Long, Shelhamer and Darrell, CVPR 2015 / PAMI 2016).

The heads follow the reference Caffe nets (`voc-fcn{32,16,8}s/net.py`, `voc-fcn8s-atonce`):

    32s: score_fr -> upscore (64/32) -> crop 19
    16s: score_fr -> upscore2 (4/2) + crop(score_pool4, 5) -> upscore16 (32/16) -> crop 27
    8s:  score_fr -> upscore2 (4/2) + crop(score_pool4, 5) -> upscore_pool4 (4/2)
                  + crop(score_pool3, 9) -> upscore8 (16/8) -> crop 31

Score layers are zero-initialised 1x1 convolutions; upsampling layers are bilinear
transposed convolutions (`BilinearUpsample`), fixed unless `learnable_upsampling`. The
at-once 8s variant scales pool4 by 0.01 and pool3 by 0.0001 before scoring them.

Thanks to conv1_1's padding of 100 and ceil-mode pooling, every input of at least 1 x 1
pixels gives logits of exactly its own height and width: with `u = H + 198`, fc7 has
`ceil(u / 32) - 6 >= 1` rows and every crop fits (`MIN_SIZE`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.models.pointwise_conv import PointwiseConv
from jaxseg.models.upsampling import BilinearUpsample
from jaxseg.models.vgg import VGG16

__all__ = ["FCN", "MIN_SIZE"]

MIN_SIZE = 1
"""Smallest input height and width (pixels) the VGG16 FCNs accept."""

# Skip scaling of the at-once FCN-8s (fixed `Scale` layers in the reference).
_POOL4_SCALE = 0.01
_POOL3_SCALE = 0.0001


def _crop(x: jax.Array, offset: int, size: tuple[int, int]) -> jax.Array:
    """Returns `x [B, H, W, C]` cropped to `[B, size[0], size[1], C]` at `(offset, offset)`."""
    return x[:, offset : offset + size[0], offset : offset + size[1], :]


class FCN(nn.Module, kw_only=True):
    """Returns `[B, H, W, K]` float32 logits of an FCN-32s / 16s / 8s on VGG16.

    Attributes:
      num_classes: K.
      stride: 32, 16 or 8: the output stride of the finest skip (FCN-32s, -16s, -8s).
      skip_scaling: the at-once FCN-8s's fixed scaling of pool4 (0.01) and pool3 (0.0001).
      width: channel multiplier of the backbone (1.0 is the real VGG16).
      learnable_upsampling: make the bilinear transposed convolutions trainable parameters
        (the reference keeps them fixed; fixed ones have no parameters).
      dropout_rate: dropout after fc6 and fc7.
      batch_norm: BatchNorm after each backbone conv (`VGG16.batch_norm`; not in the paper).
      dtype: compute dtype; parameters and logits are float32.

    Parameters: `backbone` (`VGG16`), `score_fr`, `score_pool4` (16s, 8s), `score_pool3` (8s)
    and, when learnable, `upscore` (32s) / `upscore2`, `upscore16` (16s) / `upscore2`,
    `upscore_pool4`, `upscore8` (8s), named as in the reference.
    """

    num_classes: int
    stride: int = 8
    skip_scaling: bool = False
    width: float = 1.0
    learnable_upsampling: bool = False
    dropout_rate: float = 0.5
    batch_norm: bool = False
    dtype: Any = jnp.float32

    def _score(self, x: jax.Array, name: str) -> jax.Array:
        return PointwiseConv(
            features=self.num_classes,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            name=name,
        )(x)

    def _upsample(self, factor: int, name: str) -> BilinearUpsample:
        return BilinearUpsample(
            factor=factor, learnable=self.learnable_upsampling, dtype=self.dtype, name=name
        )

    @nn.compact
    def __call__(self, images: ArrayLike, *, train: bool = False) -> jax.Array:
        """Segments `images`.

        Args:
          images: `[B, H, W, C]` with H, W >= `MIN_SIZE`.
          train: enables dropout (then needs a `'dropout'` rng).

        Returns:
          `[B, H, W, K]` float32 logits.
        """
        images = jnp.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"FCN: images must be [B, H, W, C], got shape {images.shape}")
        size = images.shape[1:3]
        if min(size) < MIN_SIZE:
            raise ValueError(
                f"FCN: images must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got shape "
                f"{images.shape}"
            )
        if self.stride not in (8, 16, 32):
            raise ValueError(f"FCN: stride must be 32, 16 or 8, got {self.stride}")
        if self.skip_scaling and self.stride == 32:
            raise ValueError("FCN: skip_scaling needs skips (stride 16 or 8), got stride 32")
        if self.num_classes < 1:
            raise ValueError(f"FCN: num_classes must be >= 1, got {self.num_classes}")

        features = VGG16(
            width=self.width,
            dropout_rate=self.dropout_rate,
            batch_norm=self.batch_norm,
            dtype=self.dtype,
            name="backbone",
        )(images, train=train)
        score = self._score(features["fc7"], "score_fr")
        if self.stride == 32:
            logits = self._upsample(32, "upscore")(score, offset=19, size=size)
            return logits.astype(jnp.float32)

        scale4, scale3 = (_POOL4_SCALE, _POOL3_SCALE) if self.skip_scaling else (1.0, 1.0)
        score = self._upsample(2, "upscore2")(score)
        pool4 = self._score(features["pool4"] * scale4, "score_pool4")
        score = score + _crop(pool4, 5, score.shape[1:3])
        if self.stride == 16:
            logits = self._upsample(16, "upscore16")(score, offset=27, size=size)
            return logits.astype(jnp.float32)

        score = self._upsample(2, "upscore_pool4")(score)
        pool3 = self._score(features["pool3"] * scale3, "score_pool3")
        score = score + _crop(pool3, 9, score.shape[1:3])
        logits = self._upsample(8, "upscore8")(score, offset=31, size=size)
        return logits.astype(jnp.float32)
