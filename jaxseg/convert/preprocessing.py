"""The input preprocessing each torchvision model was trained and evaluated with.

A converted model computes torchvision's outputs only on the inputs torchvision's model
gets. For all of them: RGB, values `uint8 / 255` in [0, 1], then `(x - mean) / std` with the
ImageNet statistics, channels last here. The resize rules (torchvision's weights'
`transforms()` and its reference scripts' evaluation presets):

- ImageNet classifiers (`resnet*` `IMAGENET1K_V1`, `vgg16`): shorter side to 256
  (bilinear, antialiased), centre crop 224 x 224. (ResNet `IMAGENET1K_V2` resizes to 232.)
- `fcn_resnet*` (`COCO_WITH_VOC_LABELS_V1`, 21 VOC classes): shorter side to 520
  (bilinear, antialiased; label maps nearest), no crop; logits come back at the resized
  size.
- `maskrcnn_resnet50_fpn` (`COCO_V1`): `GeneralizedRCNNTransform`: scale by
  `min(800 / shorter side, 1333 / longer side)` (bilinear, `align_corners=False`, not
  antialiased), pad bottom/right with zeros to a multiple of 32; boxes and masks are
  mapped back to the original image size afterwards.
"""

from __future__ import annotations

from typing import Any

from jaxseg.convert.archs import get_arch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "preprocessing"]

# Also `jaxseg.data.IMAGENET_MEAN` / `IMAGENET_STD` (the input pipelines'), which a test keeps
# equal; repeated here so that `jaxseg.convert` does not import the data stack.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_COMMON = {
    "color": "RGB",
    "pixel_scale": 1 / 255,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "interpolation": "bilinear",
}
_RULES: dict[str, dict[str, Any]] = {
    "classification": {
        "weights": "IMAGENET1K_V1",
        "resize": "shorter_side",
        "resize_size": 256,
        "max_size": None,
        "antialias": True,
        "crop_size": 224,
        "size_divisible": None,
    },
    "segmentation": {
        "weights": "COCO_WITH_VOC_LABELS_V1",
        "resize": "shorter_side",
        "resize_size": 520,
        "max_size": None,
        "antialias": True,
        "crop_size": None,
        "size_divisible": None,
        "label_interpolation": "nearest",
    },
    "detection": {
        "weights": "COCO_V1",
        "resize": "shorter_side",
        "resize_size": 800,
        "max_size": 1333,
        "antialias": False,
        "crop_size": None,
        "size_divisible": 32,
    },
}


def preprocessing(arch: str) -> dict[str, Any]:
    """Returns the preprocessing that reproduces torchvision's evaluation of `arch`.

    Keys: `color` ('RGB'); `pixel_scale` (1/255: uint8 to [0, 1]); `mean`, `std` (3 floats
    each, applied after the scaling); `resize` ('shorter_side'); `resize_size` (the shorter
    side's target); `max_size` (cap of the longer side, or None); `interpolation`
    ('bilinear'); `antialias`; `crop_size` (centre crop side, or None); `size_divisible`
    (pad height and width up to a multiple, or None); `weights` (the torchvision weights
    these hold for); `label_interpolation` for segmentation.

    Raises:
      ValueError: for an unknown arch, listing the known ones.
    """
    get_arch(arch)
    if arch.startswith("fcn_"):
        task = "segmentation"
    elif arch.startswith("maskrcnn_"):
        task = "detection"
    else:
        task = "classification"
    return {"arch": arch, "task": task, **_COMMON, **_RULES[task]}
