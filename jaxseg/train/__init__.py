"""Training: the generic loop, its task interface, optimiser, checkpoints and logs.

    from jaxseg.train import train_and_evaluate
    train_and_evaluate(config, workdir)   # what train.py calls

`jaxseg.evaluation.run.evaluate(config, workdir)` is what eval.py calls.
"""

from jaxseg.train.checkpointing import Checkpointer
from jaxseg.train.config import base_config, check_config, check_workdir
from jaxseg.train.loop import create_train_state, prepare, train_and_evaluate
from jaxseg.train.optimizer import make_optimizer, make_schedule
from jaxseg.train.state import TrainState
from jaxseg.train.task import Task
from jaxseg.train.tasks import TASKS, make_task

__all__ = [
    "TASKS",
    "Checkpointer",
    "Task",
    "TrainState",
    "base_config",
    "check_config",
    "check_workdir",
    "create_train_state",
    "make_optimizer",
    "make_schedule",
    "make_task",
    "prepare",
    "train_and_evaluate",
]
