"""Runtime plumbing of the training and evaluation programs: checkpoints, devices and
processes, signals, non-finite steps, the compilation cache, progress and metric logs,
the workdir lock and the command-line front end. Nothing here knows a model or a task."""

from jaxseg.runtime import distributed, sharding
from jaxseg.runtime.checkpointing import Checkpointer, CheckpointSaveError

__all__ = ["CheckpointSaveError", "Checkpointer", "distributed", "sharding"]
