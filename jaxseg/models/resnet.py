"""ResNet-18/34/50/101/152 backbones (torchvision's `resnet*`, channels last, no classifier).

The same structure as torchvision (v1.5: a Bottleneck's stride sits on its 3x3 conv), so
weights map 1:1 (`kernel = weight.permute(2, 3, 1, 0)`; BatchNorm `weight, bias,
running_mean, running_var` -> `scale, bias` in 'params' and `mean, var` in 'batch_stats')::

    conv1, bn1                    <- conv1, bn1
    layer{i}_{j}/conv{k}, bn{k}   <- layer{i}.{j}.conv{k}, bn{k}
    layer{i}_{j}/downsample_conv  <- layer{i}.{j}.downsample.0
    layer{i}_{j}/downsample_bn    <- layer{i}.{j}.downsample.1

(`fc` is not part of the backbone.) `replace_stride_with_dilation` works as torchvision's:
a dilated stage keeps stride 1, its first block uses the previous dilation and the
others the new one; `(False, True, True)` gives output stride 8 (the FCN backbone).

For Mask R-CNN it returns C2..C5, takes frozen BatchNorm (`norm='frozen'`, torchvision's
`FrozenBatchNorm2d`) and frozen leading stages (`frozen_stages=2`: stem and layer1, i.e.
torchvision's `trainable_layers=3`). Frozen parts get no gradient; their parameters still
sit in 'params', so mask them out of weight decay with `trainable_mask`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.models.patch_conv import PatchConv
from jaxseg.models.pointwise_conv import PointwiseConv
from jaxseg.models.vgg import scaled_channels

__all__ = ["FrozenBatchNorm", "GroupNorm", "ResNet", "trainable_mask"]

# depth -> (bottleneck blocks?, blocks per stage)
_DEPTHS = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
_NORMS = ("batch", "frozen", "group")
_EPSILON = 1e-5  # torch BatchNorm2d / FrozenBatchNorm2d
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's


class FrozenBatchNorm(nn.Module, kw_only=True):
    """Returns `(x - mean) * scale / sqrt(var + eps) + bias` with no gradient to anything.

    Variables are named as `nn.BatchNorm`'s (`params: scale, bias`; `batch_stats: mean,
    var`), so a tree from either loads into the other.
    """

    epsilon: float = _EPSILON
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises `x [..., C]` with fixed statistics and affine parameters."""
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,)).value
        var = self.variable("batch_stats", "var", jnp.ones, (channels,)).value
        scale, bias, mean, var = jax.lax.stop_gradient((scale, bias, mean, var))
        multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
        return x * multiplier.astype(self.dtype) + (bias - mean * multiplier).astype(self.dtype)


class GroupNorm(nn.Module, kw_only=True):
    """Returns GroupNorm of `x [..., C]` with gcd(32, C) groups (32 for the real widths).

    Variables `params: scale, bias` as the other norms, so `trainable_mask` treats it alike.
    """

    groups: int = 32
    epsilon: float = _EPSILON
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        groups = math.gcd(self.groups, channels)
        # Statistics in float32 whatever the compute dtype.
        y = x.astype(jnp.float32).reshape(*x.shape[:-1], groups, channels // groups)
        axes = (*range(1, y.ndim - 2), y.ndim - 1)
        mean = jnp.mean(y, axis=axes, keepdims=True)
        var = jnp.var(y, axis=axes, keepdims=True)
        y = ((y - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        return (y * scale + bias).astype(self.dtype)


def _norm(kind: str, train: bool, dtype: Any, name: str) -> nn.Module:
    """Returns the normalisation layer `name`: BatchNorm with torch's settings, frozen or group."""
    if kind == "frozen":
        return FrozenBatchNorm(dtype=dtype, name=name)
    if kind == "group":
        return GroupNorm(dtype=dtype, name=name)
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=_EPSILON, dtype=dtype, name=name
    )


def _conv(
    features: int, size: int, *, stride: int = 1, dilation: int = 1, dtype: Any, name: str
) -> nn.Module:
    """Returns a bias-free convolution padded like torch's `padding=dilation * (size // 2)`.

    Initialised as torchvision's ResNet convs (He normal, fan_out); 1x1 ones are matmuls
    (`PointwiseConv`, the same parameters).
    """
    if size == 1:
        return PointwiseConv(
            features=features,
            strides=(stride, stride),
            use_bias=False,
            kernel_init=_CONV_INIT,
            dtype=dtype,
            name=name,
        )
    pad = dilation * (size // 2)
    return nn.Conv(
        features,
        (size, size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=False,
        kernel_init=_CONV_INIT,
        dtype=dtype,
        name=name,
    )


class _Block(nn.Module, kw_only=True):
    """Returns `[B, H / stride, W / stride, planes * expansion]`: one residual block."""

    planes: int
    bottleneck: bool
    stride: int
    dilation: int
    downsample: bool
    norm: str
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(_conv, dtype=self.dtype)
        norm = functools.partial(_norm, self.norm, train, self.dtype)
        strided = dict(stride=self.stride, dilation=self.dilation)
        if self.bottleneck:
            out_channels = 4 * self.planes
            y = nn.relu(norm("bn1")(conv(self.planes, 1, name="conv1")(x)))
            y = nn.relu(norm("bn2")(conv(self.planes, 3, name="conv2", **strided)(y)))
            y = norm("bn3")(conv(out_channels, 1, name="conv3")(y))
        else:
            out_channels = self.planes
            y = nn.relu(norm("bn1")(conv(self.planes, 3, name="conv1", **strided)(x)))
            y = norm("bn2")(conv(self.planes, 3, dilation=self.dilation, name="conv2")(y))
        if self.downsample:
            x = conv(out_channels, 1, stride=self.stride, name="downsample_conv")(x)
            x = norm("downsample_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module, kw_only=True):
    """Returns the C2..C5 features of a torchvision-structured ResNet.

    Attributes:
      depth: 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks).
      width: channel multiplier (1.0 is the real network: stem 64, stages 64..512 planes).
      replace_stride_with_dilation: for layer2, layer3, layer4, as torchvision's.
        (torchvision refuses dilation in basic blocks; here they dilate both 3x3 convs.)
      norm: 'batch' (BatchNorm, batch statistics when training, running ones otherwise),
        'frozen' (`FrozenBatchNorm`: running statistics and fixed affine, always) or
        'group' (`GroupNorm`, 32 groups, trained; no batch statistics).
      frozen_stages: how many leading stages get no gradient: 0 none, 1 the stem,
        2 stem and layer1, ... 5 all.
      dtype: compute dtype; parameters stay float32.
    """

    depth: int = 50
    width: float = 1.0
    replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, False)
    norm: str = "batch"
    frozen_stages: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: ArrayLike, *, train: bool = False) -> dict[str, jax.Array]:
        """Runs the backbone.

        Args:
          images: `[B, H, W, C]`, any H, W >= 1.
          train: BatchNorm uses and updates batch statistics (apply with
            `mutable=['batch_stats']`); no effect with `norm='frozen'`.

        Returns:
          `{'c2', 'c3', 'c4', 'c5'}`: layer1..layer4 outputs `[B, H_i, W_i, C_i]` with
          C_i = (64, 128, 256, 512) * width * (4 for bottlenecks) and strides 4, 8, 16, 32
          (a dilated stage keeps its input's stride); each stride-2 step maps n to
          `floor((n - 1) / 2) + 1`.
        """
        x = jnp.asarray(images, self.dtype)
        if x.ndim != 4 or min(x.shape[1:3]) < 1:
            raise ValueError(f"ResNet: images must be [B, H, W, C], got shape {x.shape}")
        if self.depth not in _DEPTHS:
            raise ValueError(f"ResNet: depth must be one of {sorted(_DEPTHS)}, got {self.depth}")
        if self.norm not in _NORMS:
            raise ValueError(f"ResNet: norm must be one of {_NORMS}, got {self.norm!r}")
        if not 0 <= self.frozen_stages <= 5:
            raise ValueError(f"ResNet: frozen_stages must be in [0, 5], got {self.frozen_stages}")
        if len(self.replace_stride_with_dilation) != 3:
            raise ValueError(
                "ResNet: replace_stride_with_dilation needs 3 entries (layer2..layer4), got "
                f"{self.replace_stride_with_dilation}"
            )
        bottleneck, blocks_per_stage = _DEPTHS[self.depth]
        expansion = 4 if bottleneck else 1

        # The stem sees the image's 3 channels: a patch matmul (see PatchConv), same params.
        x = PatchConv(
            features=scaled_channels(64, self.width),
            kernel_size=(7, 7),
            strides=(2, 2),
            padding=((3, 3), (3, 3)),
            use_bias=False,
            kernel_init=_CONV_INIT,
            dtype=self.dtype,
            name="conv1",
        )(x)
        x = nn.relu(_norm(self.norm, train, self.dtype, "bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        if self.frozen_stages >= 1:
            x = jax.lax.stop_gradient(x)

        features = {}
        in_channels = x.shape[-1]
        dilation = 1
        dilate = (False, *self.replace_stride_with_dilation)
        for stage, num_blocks in enumerate(blocks_per_stage):
            planes = scaled_channels(64 * 2**stage, self.width)
            stride = 1 if stage == 0 else 2
            previous_dilation = dilation
            if dilate[stage]:
                dilation, stride = dilation * stride, 1
            for block in range(num_blocks):
                x = _Block(
                    planes=planes,
                    bottleneck=bottleneck,
                    stride=stride if block == 0 else 1,
                    dilation=previous_dilation if block == 0 else dilation,
                    downsample=block == 0 and (stride != 1 or in_channels != planes * expansion),
                    norm=self.norm,
                    dtype=self.dtype,
                    name=f"layer{stage + 1}_{block}",
                )(x, train=train)
            in_channels = planes * expansion
            if self.frozen_stages >= stage + 2:
                x = jax.lax.stop_gradient(x)
            features[f"c{stage + 2}"] = x
        return features


def trainable_mask(params: Any, *, norm: str = "batch", frozen_stages: int = 0) -> Any:
    """Returns a pytree of bools like `params` (a `ResNet`'s): False where `ResNet` is frozen.

    For `optax.masked` / `optax.multi_transform`, so that weight decay leaves frozen
    parameters alone (their gradients are already zero).
    """

    def is_trainable(path: tuple[Any, ...], _: Any) -> bool:
        names = [str(getattr(key, "key", key)) for key in path]
        # conv1, bn1 are stage 1; layer{i}_{j} is stage i + 1.
        stage = 1 if names[0] in ("conv1", "bn1") else int(names[0][len("layer")]) + 1
        if stage <= frozen_stages:
            return False
        in_norm = names[-2].startswith("bn") or names[-2] == "downsample_bn"
        return not (norm == "frozen" and in_norm)

    return jax.tree_util.tree_map_with_path(is_trainable, params)
