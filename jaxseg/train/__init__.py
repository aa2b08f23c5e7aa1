"""Training: the generic loop over a task, its train and eval steps, state and optimiser.

    from jaxseg.train import train_and_evaluate
    train_and_evaluate(config, workdir)   # what train.py calls

The config is `jaxseg.config`, the tasks `jaxseg.tasks`, checkpoints and the rest of the
runtime `jaxseg.runtime`; `jaxseg.inference.evaluate(config, workdir)` is what eval.py calls.
"""

from jaxseg.train.loop import abstract_train_state, create_train_state, prepare, train_and_evaluate
from jaxseg.train.optimizer import make_optimizer, make_schedule
from jaxseg.train.state import TrainState
from jaxseg.train.step import make_eval_step, make_train_step

__all__ = [
    "TrainState",
    "abstract_train_state",
    "create_train_state",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "prepare",
    "train_and_evaluate",
]
