"""`MODELS`: the one table of model names, each with its module, its task and its settings.

A config's `model.name` is looked up here, by `build_model` and by `jaxseg.tasks.make_task`.
Adding a model is one entry::

    MODELS["fcn4s"] = ModelEntry(FCN, task="semantic", settings={"stride": 4})
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from jaxseg.models.fcn import FCN
from jaxseg.models.fcn_resnet import FCNResNet
from jaxseg.models.mask_rcnn import MaskRCNN
from jaxseg.models.settings import check_settings

__all__ = ["MODELS", "ModelEntry", "build_model", "model_entry"]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """What a model name stands for.

    Attributes:
      module: the Flax module class.
      task: the kind of task that trains and evaluates it, a key of `jaxseg.tasks.TASKS`
        ('semantic': per-pixel classes; 'instance': boxes, classes and masks).
      settings: the module attributes the name fixes (FCN-8s: `stride=8`); a config sets
        the others.
      best_metric: the metric that ranks its checkpoints unless `config.eval.best_metric`
        names another; None: the task's `default_best_metric`.
    """

    module: type[nn.Module]
    task: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    best_metric: str | None = None


MODELS: dict[str, ModelEntry] = {
    "fcn32s": ModelEntry(FCN, task="semantic", settings={"stride": 32}),
    "fcn16s": ModelEntry(FCN, task="semantic", settings={"stride": 16}),
    "fcn8s": ModelEntry(FCN, task="semantic", settings={"stride": 8}),
    "fcn8s_atonce": ModelEntry(FCN, task="semantic", settings={"stride": 8, "skip_scaling": True}),
    "fcn_resnet50": ModelEntry(FCNResNet, task="semantic", settings={"depth": 50}),
    "fcn_resnet101": ModelEntry(FCNResNet, task="semantic", settings={"depth": 101}),
    "mask_rcnn_resnet18_fpn": ModelEntry(MaskRCNN, task="instance", settings={"depth": 18}),
    "mask_rcnn_resnet34_fpn": ModelEntry(MaskRCNN, task="instance", settings={"depth": 34}),
    "mask_rcnn_resnet50_fpn": ModelEntry(MaskRCNN, task="instance", settings={"depth": 50}),
    "mask_rcnn_resnet101_fpn": ModelEntry(MaskRCNN, task="instance", settings={"depth": 101}),
}


def model_entry(name: str) -> ModelEntry:
    """Returns the entry of `name`.

    Raises:
      ValueError: for an unknown name, with the closest known one.
    """
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, **settings: Any) -> nn.Module:
    """Returns the module `name` in `MODELS` built with the attributes `settings`.

    A config's model section calls it whole: `build_model(**config.model)`.

    A group of a part's settings (`rpn`, `roi_heads`, ... of Mask R-CNN) may be a dict or a
    ConfigDict.

    Raises:
      ValueError: for an unknown name, an unknown attribute (with the closest one the
        module has), one the name fixes, an old flat Mask R-CNN setting (naming its new
        key), or a bad group (see `jaxseg.models.settings`).
    """
    entry = model_entry(name)
    fixed = dict(entry.settings)
    return entry.module(
        **fixed, **check_settings(f"model {name!r}", entry.module, settings, fixed=fixed)
    )
