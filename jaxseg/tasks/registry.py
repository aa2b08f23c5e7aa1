"""`TASKS`: each kind of task a `jaxseg.models.MODELS` entry names, and `make_task`."""

from __future__ import annotations

import ml_collections

from jaxseg.models import model_entry
from jaxseg.tasks.base import Task
from jaxseg.tasks.instance import InstanceSegmentationTask
from jaxseg.tasks.semantic import SemanticSegmentationTask

__all__ = ["TASKS", "make_task"]

TASKS: dict[str, type[Task]] = {
    "semantic": SemanticSegmentationTask,
    "instance": InstanceSegmentationTask,
}


def make_task(config: ml_collections.ConfigDict) -> Task:
    """Returns the task that trains `config.model.name`, its model built from `config.model`.

    Raises:
      ValueError: for a model name that is not in `jaxseg.models.MODELS`.
    """
    entry = model_entry(config.model.name)
    return TASKS[entry.task](config, entry)
