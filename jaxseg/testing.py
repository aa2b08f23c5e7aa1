"""Tiny model settings shared by the tests and benchmarks: the one copy of each.

Mask R-CNN settings are nested like the model's parts (see `jaxseg.models.settings`)::

    model = MaskRCNN(**tiny_mask_rcnn())                        # R18-FPN, 3 classes, 64 px
    model = MaskRCNN(**tiny_mask_rcnn(rpn={'pre_nms_top_n_test': 200}))
    set_tiny_mask_rcnn(config.model)                            # the same in a config
    set_model_settings(config.model, TINY_MASK_RCNN_WIDTHS)     # narrow a config's model
    flags = model_flags(TINY_MASK_RCNN_WIDTHS)                  # the same for train.py
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax.core import FrozenDict

# The model name whose depth the tiny Mask R-CNN has.
TINY_MASK_RCNN_NAME = "mask_rcnn_resnet18_fpn"
# Narrow parts: an eighth of ResNet's width, FPN and heads of 8-32 channels.
TINY_MASK_RCNN_WIDTHS = FrozenDict(
    width=0.125,
    fpn={"channels": 16},
    roi_heads={
        "detections_per_image": 10,
        "box_head": {"representation_size": 32},
        "mask_head": {"channels": 8},
    },
)
# Counts for 64 px images: anchors 8..128 px, 100 / 50 proposals, 32 sampled RoIs.
TINY_MASK_RCNN_COUNTS = FrozenDict(
    rpn={
        "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
        "pre_nms_top_n_train": 100,
        "post_nms_top_n_train": 50,
        "pre_nms_top_n_test": 50,
        "post_nms_top_n_test": 30,
        "batch_size_per_image": 64,
    },
    roi_heads={"batch_size_per_image": 32, "mask_rois_per_image": 8},
)
# benchmarks/scaling.py's CPU runs (full width by default): larger counts than the tests'.
SMALL_MASK_RCNN = FrozenDict(
    fpn={"channels": 32},
    rpn={
        "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
        "pre_nms_top_n_train": 200,
        "post_nms_top_n_train": 100,
        "batch_size_per_image": 64,
    },
    roi_heads={
        "batch_size_per_image": 64,
        "mask_rois_per_image": 16,
        "box_head": {"representation_size": 64},
        "mask_head": {"channels": 16},
    },
)


def merge_settings(*settings: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the settings merged left to right, groups (mappings) merged key by key."""
    out: dict[str, Any] = {}
    for each in settings:
        for key, value in each.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge_settings(out[key], value)
            elif isinstance(value, Mapping):
                out[key] = merge_settings(value)
            else:
                out[key] = value
    return out


def tiny_mask_rcnn(**overrides: Any) -> dict[str, Any]:
    """Returns `MaskRCNN` settings of a tiny R18-FPN for 3 classes and 64 px images.

    Args:
      **overrides: settings on top, groups merged (`rpn={'pre_nms_top_n_test': 200}` keeps
        the other tiny RPN settings).
    """
    return merge_settings(
        {"num_classes": 3, "depth": 18}, TINY_MASK_RCNN_WIDTHS, TINY_MASK_RCNN_COUNTS, overrides
    )


def set_tiny_mask_rcnn(model_config: Any) -> None:
    """Narrows a config's Mask R-CNN to `tiny_mask_rcnn()`'s widths and counts.

    The name (so the depth) and the class count stay the config's.
    """
    set_model_settings(model_config, merge_settings(TINY_MASK_RCNN_WIDTHS, TINY_MASK_RCNN_COUNTS))


def dotted(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Returns nested settings with dotted keys ({'fpn': {'channels': 16}} -> 'fpn.channels')."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def set_model_settings(model_config: Any, settings: Mapping[str, Any]) -> None:
    """Writes nested `settings` into a config's model section (a ConfigDict), groups created.

    Keys absent from the config are added; the model's name and other keys stay.
    """
    for key, value in dotted(settings).items():
        *groups, leaf = key.split(".")
        node = model_config
        for group in groups:
            if group not in node:
                node[group] = {}  # a ConfigDict turns it into a ConfigDict
            node = node[group]
        node[leaf] = value


def model_flags(settings: Mapping[str, Any]) -> list[str]:
    """Returns `settings` as train.py / eval.py flags, e.g. '--config.model.fpn.channels=16'.

    The config must already hold each key (ml_collections adds none from the command line):
    the Mask R-CNN configs list every part's settings.
    """
    return [f"--config.model.{key}={value}" for key, value in dotted(settings).items()]
