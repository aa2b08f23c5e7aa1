"""`TASKS`: the one table from a config's `model.name` to the task that trains it."""

from __future__ import annotations

import ml_collections

from jaxseg.train.instance_task import InstanceSegmentationTask
from jaxseg.train.semantic_task import SemanticSegmentationTask
from jaxseg.train.task import Task

__all__ = ["TASKS", "make_task"]

TASKS: dict[str, type[Task]] = {
    "fcn32s": SemanticSegmentationTask,
    "fcn16s": SemanticSegmentationTask,
    "fcn8s": SemanticSegmentationTask,
    "fcn8s_atonce": SemanticSegmentationTask,
    "fcn_resnet50": SemanticSegmentationTask,
    "fcn_resnet101": SemanticSegmentationTask,
    "mask_rcnn_resnet18_fpn": InstanceSegmentationTask,
    "mask_rcnn_resnet34_fpn": InstanceSegmentationTask,
    "mask_rcnn_resnet50_fpn": InstanceSegmentationTask,
    "mask_rcnn_resnet101_fpn": InstanceSegmentationTask,
}


def make_task(config: ml_collections.ConfigDict) -> Task:
    """Returns the task that trains `config.model.name`.

    Raises:
      ValueError: for a model name no task trains.
    """
    name = config.model.name
    if name not in TASKS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(TASKS)}")
    return TASKS[name](config)
