"""Flax linen models; `build_model(config.model.name, **settings)` resolves a config's name.

`MODELS` is the one table of model names: each maps to a module class and the attributes
that name fixes; the remaining attributes come from the config.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxseg.models.fcn import FCN, MIN_SIZE
from jaxseg.models.fcn_resnet import FCNHead, FCNResNet
from jaxseg.models.fpn import FPN
from jaxseg.models.losses import IGNORE_LABEL, softmax_cross_entropy
from jaxseg.models.mask_rcnn import MaskRCNN, mask_rcnn_trainable_mask
from jaxseg.models.resnet import FrozenBatchNorm, ResNet, trainable_mask
from jaxseg.models.settings import check_settings
from jaxseg.models.surgery import transplant
from jaxseg.models.upsampling import BilinearUpsample, bilinear_kernel, resize_bilinear
from jaxseg.models.vgg import VGG16

__all__ = [
    "FCN",
    "FPN",
    "IGNORE_LABEL",
    "MIN_SIZE",
    "MODELS",
    "VGG16",
    "BilinearUpsample",
    "FCNHead",
    "FCNResNet",
    "FrozenBatchNorm",
    "MaskRCNN",
    "ResNet",
    "bilinear_kernel",
    "build_model",
    "mask_rcnn_trainable_mask",
    "resize_bilinear",
    "softmax_cross_entropy",
    "trainable_mask",
    "transplant",
]

# name -> (module class, attributes fixed by the name)
MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "fcn32s": (FCN, {"stride": 32}),
    "fcn16s": (FCN, {"stride": 16}),
    "fcn8s": (FCN, {"stride": 8}),
    "fcn8s_atonce": (FCN, {"stride": 8, "skip_scaling": True}),
    "fcn_resnet50": (FCNResNet, {"depth": 50}),
    "fcn_resnet101": (FCNResNet, {"depth": 101}),
    "mask_rcnn_resnet18_fpn": (MaskRCNN, {"depth": 18}),
    "mask_rcnn_resnet34_fpn": (MaskRCNN, {"depth": 34}),
    "mask_rcnn_resnet50_fpn": (MaskRCNN, {"depth": 50}),
    "mask_rcnn_resnet101_fpn": (MaskRCNN, {"depth": 101}),
}


def build_model(name: str, **settings: Any) -> nn.Module:
    """Returns the module `name` in `MODELS` built with the attributes `settings`.

    A config's model section calls it whole: `build_model(**config.model)`. A group of a
    part's settings (`rpn`, `roi_heads`, ... of Mask R-CNN) may be a dict or a ConfigDict.

    Raises:
      ValueError: for an unknown name, an unknown attribute, one the name fixes, an old
        flat Mask R-CNN setting (naming its new key), or a bad group (see
        `jaxseg.models.settings`).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    cls, fixed = MODELS[name]
    return cls(**fixed, **check_settings(f"model {name!r}", cls, settings, fixed=fixed))
