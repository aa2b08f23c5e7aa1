"""The torchvision architectures the converter knows: model, key names, heads, ignored keys.

`ARCHS` is the one table: each name (torchvision's builder name) gives the jaxseg module it
becomes and how to read a state dict of it. The ImageNet classifiers become backbones: their
classifier (`fc` of a ResNet, `classifier.6` of VGG16) has no jaxseg counterpart and is
dropped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from jaxseg.convert import naming
from jaxseg.models import VGG16, FCNResNet, MaskRCNN, ResNet
from jaxseg.models.settings import check_settings

__all__ = ["ARCHS", "Arch", "get_arch", "guess_arch"]


@dataclasses.dataclass(frozen=True)
class Arch:
    """How one torchvision architecture maps onto jaxseg.

    Attributes:
      name: torchvision's builder name, e.g. 'fcn_resnet50'.
      module_class: the jaxseg module.
      fixed: module attributes the name fixes (e.g. `depth=50`).
      module: renames a jaxseg module path to torchvision's (see `jaxseg.convert.naming`).
      ignored: torchvision key prefixes with no jaxseg counterpart, dropped with a note.
      class_layers: jaxseg module paths ('a/b') whose shapes depend on `num_classes`;
        re-initialised when the requested class count differs from the checkpoint's.
      optional_heads: module attribute -> (jaxseg module path, torchvision key prefix) of a
        head it switches on (`aux_loss` -> ('aux_classifier', 'aux_classifier.')).
      infer: reads module attributes from a state dict (class count, optional heads).
      kernel_kinds: jaxseg module path -> layout kind of its kernel where it is not a plain
        conv or dense kernel (see `jaxseg.convert.layout.convert_tensor`).
      canonical_key: rewrites a state dict key into the naming `module` produces (older
        torchvision releases named some layers differently).
      placeholders: attributes to assume, only for listing a state dict's key mismatches,
        when neither the caller nor the state dict gives them.
      init_kwargs: keyword arguments of the module's `init` besides the image.
      model_name: the `jaxseg.models.MODELS` name of the same model (for configs), if any.
    """

    name: str
    module_class: type[nn.Module]
    fixed: Mapping[str, Any]
    module: Callable[[tuple[str, ...]], list[str]]
    ignored: tuple[str, ...] = ()
    class_layers: tuple[str, ...] = ()
    optional_heads: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    infer: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda state_dict: {}
    kernel_kinds: Mapping[str, str] = dataclasses.field(default_factory=dict)
    canonical_key: Callable[[str], str] = lambda key: key
    placeholders: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model_name: str | None = None

    def build(self, **settings: Any) -> nn.Module:
        """Returns the jaxseg module with `settings` on top of the fixed attributes.

        Raises:
          ValueError: for an attribute the module does not take or the name fixes, an old
            flat Mask R-CNN setting or a bad group of one (see `jaxseg.models.settings`).
        """
        settings = check_settings(
            f"{self.name}: {self.module_class.__name__}",
            self.module_class,
            settings,
            fixed=self.fixed,
            fixed_by="the arch",
        )
        required = sorted(
            f.name
            for f in dataclasses.fields(self.module_class)
            if f.name not in self.fixed
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        absent = [name for name in required if name not in settings]
        if absent:
            raise ValueError(f"{self.name}: give {absent} (the state dict does not say)")
        return self.module_class(**self.fixed, **settings)


def _infer_fcn(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Returns `num_classes` and `aux_loss` of a torchvision FCN state dict."""
    settings: dict[str, Any] = {"aux_loss": "aux_classifier.4.weight" in state_dict}
    if "classifier.4.weight" in state_dict:
        settings["num_classes"] = int(state_dict["classifier.4.weight"].shape[0])
    return settings


def _infer_mask_rcnn(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Returns `num_classes` (K, background excluded) of a torchvision Mask R-CNN state dict."""
    key = "roi_heads.box_predictor.cls_score.weight"
    return {"num_classes": int(state_dict[key].shape[0]) - 1} if key in state_dict else {}


def _mask_rcnn(depth: int) -> Arch:
    return Arch(
        name=f"maskrcnn_resnet{depth}_fpn",
        module_class=MaskRCNN,
        fixed={"depth": depth},
        module=naming.mask_rcnn_module,
        class_layers=(
            "roi_heads/box_predictor/cls_score",
            "roi_heads/box_predictor/bbox_pred",
            "roi_heads/mask_head/mask_fcn_logits",
        ),
        infer=_infer_mask_rcnn,
        kernel_kinds={
            # torch flattens the 7 x 7 RoI features (c, y, x), jaxseg (y, x, c).
            "roi_heads/box_head/fc6": "hwc_kernel:7x7",
            "roi_heads/mask_head/conv5_mask": "patch_kernel",
        },
        canonical_key=naming.canonical_mask_rcnn_key,
        placeholders={"num_classes": 90},
        init_kwargs={"train": False},
        model_name=f"mask_rcnn_resnet{depth}_fpn",
    )


def _resnet(depth: int) -> Arch:
    return Arch(
        name=f"resnet{depth}",
        module_class=ResNet,
        fixed={"depth": depth},
        module=naming.resnet_module,
        ignored=("fc.",),
    )


def _fcn_resnet(depth: int) -> Arch:
    return Arch(
        name=f"fcn_resnet{depth}",
        module_class=FCNResNet,
        fixed={"depth": depth},
        module=naming.fcn_resnet_module,
        class_layers=("classifier/score", "aux_classifier/score"),
        optional_heads={"aux_loss": ("aux_classifier", "aux_classifier.")},
        infer=_infer_fcn,
        placeholders={"num_classes": 21},
        model_name=f"fcn_resnet{depth}",
    )


ARCHS: dict[str, Arch] = {
    "vgg16": Arch(
        name="vgg16",
        module_class=VGG16,
        fixed={},
        module=naming.vgg16_module,
        ignored=("classifier.6.",),
    ),
    **{f"resnet{depth}": _resnet(depth) for depth in (18, 34, 50, 101, 152)},
    **{f"fcn_resnet{depth}": _fcn_resnet(depth) for depth in (50, 101)},
    "maskrcnn_resnet50_fpn": _mask_rcnn(50),
}


def get_arch(name: str) -> Arch:
    """Returns `ARCHS[name]`; ValueError listing the known names for another."""
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; known archs: {sorted(ARCHS)}")
    return ARCHS[name]


_DEPTH_BY_BLOCKS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}


def _resnet_depth(keys: set[str], prefix: str) -> int | None:
    """Returns the depth of the ResNet whose keys start with `prefix`, from layer3's blocks."""
    blocks = {int(m[1]) for k in keys if (m := re.match(re.escape(prefix) + r"layer3\.(\d+)\.", k))}
    bottleneck = f"{prefix}layer1.0.conv3.weight" in keys
    return _DEPTH_BY_BLOCKS.get((bottleneck, len(blocks)))


def guess_arch(keys: set[str]) -> str | None:
    """Returns the arch whose torchvision state dict has these keys, by a few tell-tale keys."""
    if "backbone.body.conv1.weight" in keys:
        depth = _resnet_depth(keys, "backbone.body.")
        return f"maskrcnn_resnet{depth}_fpn" if f"maskrcnn_resnet{depth}_fpn" in ARCHS else None
    if "features.0.weight" in keys and "classifier.0.weight" in keys:
        return "vgg16"
    if "backbone.conv1.weight" in keys and "classifier.0.weight" in keys:
        depth = _resnet_depth(keys, "backbone.")
        return f"fcn_resnet{depth}" if f"fcn_resnet{depth}" in ARCHS else None
    if "conv1.weight" in keys:
        depth = _resnet_depth(keys, "")
        return f"resnet{depth}" if depth else None
    return None
