"""FCN-ResNet: torchvision's `fcn_resnet50` / `fcn_resnet101`, channels last.

A ResNet with dilation in layer3 and layer4 (output stride 8), the FCN head on layer4
(3x3 conv to C/4, BatchNorm, ReLU, dropout 0.1, 1x1 conv to K) and optionally the same
head on layer3 (the auxiliary classifier); each output is resized bilinearly
(`align_corners=False`) to the input size. Parameter names and torchvision's state dict::

    backbone/...                       <- backbone.*         (see `jaxseg.models.resnet`)
    classifier/conv, bn, score         <- classifier.0, .1, .4
    aux_classifier/conv, bn, score     <- aux_classifier.0, .1, .4

(the 3x3 convs have no bias, the 1x1 `score` convs do).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxseg.models.pointwise_conv import PointwiseConv
from jaxseg.models.resnet import ResNet
from jaxseg.models.upsampling import resize_bilinear

__all__ = ["FCNHead", "FCNResNet"]

# torch's default Conv2d init: weights and biases uniform in +-1/sqrt(fan_in).
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FCNHead(nn.Module, kw_only=True):
    """Returns `[B, H, W, K]`: torchvision's `FCNHead` on features `[B, H, W, C]`.

    Attributes:
      num_classes: K.
      dropout_rate: dropout before the last 1x1 conv (0.1).
      dtype: compute dtype.
    """

    num_classes: int
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        channels = x.shape[-1]
        inter = max(1, channels // 4)
        x = nn.Conv(
            inter,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=_torch_kernel_init,
            dtype=self.dtype,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="bn"
        )(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        return PointwiseConv(
            features=self.num_classes,
            kernel_init=_torch_kernel_init,
            bias_init=_torch_bias_init(inter),
            dtype=self.dtype,
            name="score",
        )(x)


class FCNResNet(nn.Module, kw_only=True):
    """Returns `{'out': [B, H, W, K], 'aux': [B, H, W, K]}` float32 logits (aux optional).

    Attributes:
      num_classes: K.
      depth: ResNet depth (50 and 101 are torchvision's models).
      aux_loss: add the auxiliary head on layer3 (`'aux'`; its loss weight, 0.5 in
        torchvision's reference, is the trainer's business).
      width: channel multiplier of the backbone (1.0 is the real ResNet).
      norm: the backbone's BatchNorm, 'batch' or 'frozen' (see `ResNet`); the heads
        always use ordinary BatchNorm.
      dropout_rate: the heads' dropout (0.1).
      dtype: compute dtype; parameters and logits are float32.
    """

    num_classes: int
    depth: int = 50
    aux_loss: bool = False
    width: float = 1.0
    norm: str = "batch"
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: ArrayLike, *, train: bool = False) -> dict[str, jax.Array]:
        """Segments `images`.

        Args:
          images: `[B, H, W, C]`, any H, W >= 1.
          train: batch statistics and dropout (apply with `mutable=['batch_stats']` and a
            `'dropout'` rng).

        Returns:
          `{'out': [B, H, W, K]}`, plus `'aux'` of the same shape when `aux_loss`.
        """
        images = jnp.asarray(images)
        if images.ndim != 4 or min(images.shape[1:3]) < 1:
            raise ValueError(f"FCNResNet: images must be [B, H, W, C], got shape {images.shape}")
        if self.num_classes < 1:
            raise ValueError(f"FCNResNet: num_classes must be >= 1, got {self.num_classes}")
        size = images.shape[1:3]
        features = ResNet(
            depth=self.depth,
            width=self.width,
            replace_stride_with_dilation=(False, True, True),
            norm=self.norm,
            dtype=self.dtype,
            name="backbone",
        )(images, train=train)
        heads = {"out": ("classifier", "c5")}
        if self.aux_loss:
            heads["aux"] = ("aux_classifier", "c4")
        outputs = {}
        for key, (name, level) in heads.items():
            logits = FCNHead(
                num_classes=self.num_classes,
                dropout_rate=self.dropout_rate,
                dtype=self.dtype,
                name=name,
            )(features[level], train=train)
            outputs[key] = resize_bilinear(logits.astype(jnp.float32), size)
        return outputs
