"""torchvision state-dict keys of jaxseg variables, one function per model family.

A jaxseg variable is addressed by its collection and module path, e.g. `('params',
('backbone', 'layer1_0', 'downsample_bn', 'scale'))`; its torchvision key here is
`backbone.layer1.0.downsample.1.weight`. The module part is renamed per family (the
`*_module` functions); the leaf part is the same everywhere::

    params/.../kernel      <- weight          (layout changed, see `jaxseg.convert.layout`)
    params/.../bias        <- bias
    params/.../scale       <- weight          (BatchNorm / FrozenBatchNorm affine)
    batch_stats/.../mean   <- running_mean
    batch_stats/.../var    <- running_var

(torch's `num_batches_tracked` counters have no counterpart and are ignored.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

__all__ = [
    "canonical_mask_rcnn_key",
    "fcn_resnet_module",
    "mask_rcnn_module",
    "resnet_module",
    "torch_key",
    "vgg16_module",
]

_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}

# VGG16's convs and torchvision's `features.N` indices (ReLUs and pools take the others).
_VGG16_FEATURES = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}  # fmt: skip
_VGG16_CLASSIFIER = {"fc6": 0, "fc7": 3}
# FCNHead's Sequential: 0 conv, 1 BatchNorm, 2 ReLU, 3 Dropout, 4 conv to K classes.
_FCN_HEAD = {"conv": 0, "bn": 1, "score": 4}
_BLOCK = re.compile(r"layer(\d)_(\d+)$")
_FPN_BLOCK = re.compile(r"(inner|layer)_blocks_(\d+)$")
_MASK_FCN = re.compile(r"mask_fcn(\d+)$")
# torchvision < 0.13 saved these layers without their `Conv2dNormActivation` wrappers (its
# COCO checkpoints still do); current torchvision reads both. Old name -> current name.
_OLD_MASK_RCNN_KEYS = (
    (re.compile(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$"),
     r"backbone.fpn.\1_blocks.\2.0.\3"),
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"roi_heads.mask_head.{int(m[1]) - 1}.0.{m[2]}"),
)  # fmt: skip


def resnet_module(names: tuple[str, ...]) -> list[str]:
    """Returns the torchvision module path of a `ResNet` submodule, e.g. `layer1.0.downsample.0`."""
    parts = []
    for name in names:
        block = _BLOCK.match(name)
        if block:
            parts += [f"layer{block[1]}", block[2]]
        elif name == "downsample_conv":
            parts += ["downsample", "0"]
        elif name == "downsample_bn":
            parts += ["downsample", "1"]
        else:
            parts.append(name)
    return parts


def vgg16_module(names: tuple[str, ...]) -> list[str]:
    """Returns the torchvision module path of a `VGG16` layer (`features.N`, `classifier.N`)."""
    (name,) = names
    if name in _VGG16_FEATURES:
        return ["features", str(_VGG16_FEATURES[name])]
    return ["classifier", str(_VGG16_CLASSIFIER[name])]


def fcn_resnet_module(names: tuple[str, ...]) -> list[str]:
    """Returns the torchvision module path of an `FCNResNet` submodule."""
    head, *rest = names
    if head == "backbone":
        return [head, *resnet_module(tuple(rest))]
    (layer,) = rest
    return [head, str(_FCN_HEAD[layer])]


def mask_rcnn_module(names: tuple[str, ...]) -> list[str]:
    """Returns the torchvision module path of a `MaskRCNN` submodule (current naming).

    backbone/... -> backbone.body...; fpn/inner_blocks_i -> backbone.fpn.inner_blocks.i.0;
    rpn/head/conv -> rpn.head.conv.0.0; roi_heads/mask_head/mask_fcnN ->
    roi_heads.mask_head.{N-1}.0; its conv5_mask and mask_fcn_logits ->
    roi_heads.mask_predictor.*; box_head and box_predictor keep their names.
    """
    head, *rest = names
    if head == "backbone":
        return ["backbone", "body", *resnet_module(tuple(rest))]
    if head == "fpn":
        (layer,) = rest
        block = _FPN_BLOCK.match(layer)
        return ["backbone", "fpn", f"{block[1]}_blocks", block[2], "0"]
    if head == "rpn" and rest == ["head", "conv"]:
        return ["rpn", "head", "conv", "0", "0"]
    if head == "roi_heads" and rest[0] == "mask_head":
        (layer,) = rest[1:]
        fcn = _MASK_FCN.match(layer)
        if fcn:
            return ["roi_heads", "mask_head", str(int(fcn[1]) - 1), "0"]
        return ["roi_heads", "mask_predictor", layer]
    return [head, *rest]


def canonical_mask_rcnn_key(key: str) -> str:
    """Returns a `maskrcnn_resnet50_fpn` key in current torchvision naming.

    torchvision's COCO checkpoint keeps the old names (`backbone.fpn.inner_blocks.0.weight`,
    `rpn.head.conv.weight`, `roi_heads.mask_head.mask_fcn1.weight`); these become
    `backbone.fpn.inner_blocks.0.0.weight`, `rpn.head.conv.0.0.weight`,
    `roi_heads.mask_head.0.0.weight`. Other keys are returned unchanged.
    """
    for pattern, replacement in _OLD_MASK_RCNN_KEYS:
        new, count = pattern.subn(replacement, key)
        if count:
            return new
    return key


def torch_key(
    collection: str,
    path: tuple[str, ...],
    module: Callable[[tuple[str, ...]], list[str]],
    *,
    kernel_kinds: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Returns `(torchvision key, layout kind)` of the jaxseg variable `collection/path`.

    Args:
      collection: 'params' or 'batch_stats'.
      path: module names then the leaf name, e.g. `('layer1_0', 'bn1', 'scale')`.
      module: the family's module renamer (`resnet_module`, ...).
      kernel_kinds: jaxseg module path ('a/b') -> the layout kind of its kernel where it is
        not 'kernel' (a transposed conv, a dense layer on a flattened map, ...).

    Returns:
      The key and the kind for `jaxseg.convert.layout.convert_tensor`: 'vector', 'kernel'
      or the module's entry in `kernel_kinds`.
    """
    *modules, leaf = path
    if (collection, leaf) not in _LEAVES:
        raise ValueError(
            f"no torchvision counterpart for the variable {collection}/{'/'.join(path)}"
        )
    key = ".".join([*module(tuple(modules)), _LEAVES[collection, leaf]])
    if leaf != "kernel":
        return key, "vector"
    return key, (kernel_kinds or {}).get("/".join(modules), "kernel")
