"""`evaluate(config, workdir)`: the library call behind `eval.py`.

Restores the best checkpoint of `<workdir>/checkpoints` (or step `config.eval.checkpoint`),
evaluates the validation split at full resolution, prints the metrics table and writes
`<workdir>/eval/metrics.json` and pictures in `<workdir>/eval/pictures/`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxseg.train import distributed, sharding
from jaxseg.train.checkpointing import Checkpointer
from jaxseg.train.config import check_workdir
from jaxseg.train.evaluate import evaluate_dataset, write_pictures
from jaxseg.train.loop import abstract_train_state, prepare
from jaxseg.train.optimizer import make_optimizer
from jaxseg.train.runtime import setup_compilation_cache
from jaxseg.train.step import make_eval_step

__all__ = ["evaluate"]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Evaluates the best (or `config.eval.checkpoint`) checkpoint of `workdir`; returns metrics.

    Raises:
      ValueError: bad config (as for training), no checkpoint in `workdir`, an unknown
        checkpoint step, or a checkpoint whose shapes differ from the model's.
    """
    task = prepare(config)
    distributed.initialize(config.distributed)  # before anything touches a device
    workdir = os.path.abspath(os.path.expanduser(workdir))
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise ValueError(
            f"no checkpoints in {directory}: train first (train.py --workdir {workdir})"
        )
    eval_dir = check_workdir(os.path.join(workdir, "eval"))
    checkpointer = Checkpointer(directory, create=False, best_metric=config.eval.best_metric)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise ValueError(f"no checkpoints in {directory}: train first")
        step = int(config.eval.checkpoint)
        if step < 0:
            step = checkpointer.best_step()
        elif step not in steps:
            raise ValueError(
                f"config.eval.checkpoint = {step}: no such step in {directory} {steps}"
            )
        setup_compilation_cache(config.compilation_cache_dir)
        mesh = sharding.make_mesh()
        optimizer = make_optimizer(config.optimizer, int(config.num_train_steps))
        abstract_state = abstract_train_state(task, optimizer, config, mesh)
        # Only the variables: evaluation needs no optimiser state, and a converted
        # checkpoint (python -m jaxseg.convert) has none.
        shardings = sharding.step_shardings(abstract_state, mesh, mode=config.sharding.params)
        host_variables = checkpointer.restore_variables(step, abstract_state)
        variables = sharding.put(host_variables, shardings.variables)
    finally:
        checkpointer.close()

    batch_size = sharding.per_process_batch_size(config.eval.batch_size, what="eval.batch_size")
    shards = {"shard_index": jax.process_index(), "shard_count": jax.process_count()}
    loader = task.eval_loader(batch_size=batch_size, **shards)
    eval_step = make_eval_step(task, shardings=shardings)
    metrics = evaluate_dataset(task, variables, loader, eval_step, mesh)
    result = {**metrics, "step": step, "checkpoint": os.path.join(directory, str(step))}
    pictures_dir = os.path.join(eval_dir, "pictures")
    paths = []
    if jax.process_index() == 0:
        with open(os.path.join(eval_dir, "metrics.json"), "w") as f:
            json.dump(_json_safe(result), f, indent=2)
        if config.eval.num_pictures > 0:
            paths = write_pictures(
                task,
                host_variables,
                task.eval_loader(batch_size=batch_size, shard_index=0, shard_count=1),
                pictures_dir,
                count=int(config.eval.num_pictures),
            )
        print(
            f"{config.model.name} on {config.dataset.name} {config.dataset.eval_split}, "
            f"checkpoint step {step}:\n{task.format_metrics(metrics)}\n"
            f"metrics: {os.path.join(eval_dir, 'metrics.json')}\n"
            f"pictures: {pictures_dir} ({len(paths)} files)",
            file=sys.stdout,
            flush=True,
        )
    return result
