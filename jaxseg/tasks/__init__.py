"""Tasks: how each kind of model trains and evaluates (model, loaders, loss, metrics, pictures).

from jaxseg.tasks import make_task
task = make_task(config)   # the task of config.model.name's kind (jaxseg.models.MODELS)
"""

from jaxseg.tasks.base import Task
from jaxseg.tasks.instance import InstanceSegmentationTask
from jaxseg.tasks.registry import TASKS, make_task
from jaxseg.tasks.semantic import SemanticSegmentationTask

__all__ = ["TASKS", "InstanceSegmentationTask", "SemanticSegmentationTask", "Task", "make_task"]
