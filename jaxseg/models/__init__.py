"""Flax linen models: FCN (VGG16), FCN-ResNet, Mask R-CNN (ResNet-FPN) and their parts.

`MODELS` (`jaxseg.models.registry`) is the one table of the model names a config takes
(`fcn8s`, `mask_rcnn_resnet50_fpn`, ...); `build_model(name, **settings)` builds one.
"""

from __future__ import annotations

from jaxseg.models.fcn import FCN, MIN_SIZE
from jaxseg.models.fcn_resnet import FCNHead, FCNResNet
from jaxseg.models.fpn import FPN
from jaxseg.models.losses import IGNORE_LABEL, softmax_cross_entropy
from jaxseg.models.mask_rcnn import MaskRCNN, mask_rcnn_trainable_mask
from jaxseg.models.registry import MODELS, ModelEntry, build_model, model_entry
from jaxseg.models.resnet import FrozenBatchNorm, ResNet, trainable_mask
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
    "ModelEntry",
    "ResNet",
    "bilinear_kernel",
    "build_model",
    "mask_rcnn_trainable_mask",
    "model_entry",
    "resize_bilinear",
    "softmax_cross_entropy",
    "trainable_mask",
    "transplant",
]
