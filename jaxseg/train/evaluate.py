"""One evaluation pass over a loader, and the pictures of its first images."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jax
import numpy as np
from PIL import Image

from jaxseg import compiler_options
from jaxseg.runtime.distributed import gather
from jaxseg.runtime.sharding import shard_batch

__all__ = ["evaluate_dataset", "picture_arrays", "write_pictures"]


def evaluate_dataset(task, variables: dict[str, Any], loader, eval_step, mesh) -> dict[str, Any]:
    """Returns the task's metrics over one pass of `loader`.

    Args:
      task: a `jaxseg.tasks.base.Task`.
      variables: the model's variables.
      loader: an evaluation loader (one epoch, padded batches with `valid`).
      eval_step: `jaxseg.train.step.make_eval_step(task)`.
      mesh: the device mesh the batches are split over.
    """
    # Counts stay on the device until the end, so the host never waits for a batch. Every
    # process runs the same number of batches (the loaders pad the split), each step sums
    # over the global batch, and `gather` brings the totals of all processes to each host.
    counts = [eval_step(variables, shard_batch(batch, mesh, task.eval_keys)) for batch in loader]
    if not counts:
        raise ValueError("the evaluation split yielded no batch")
    return task.eval_metrics(task.reduce_eval(gather(counts)))


def write_pictures(task, variables, loader, directory: str, *, count: int) -> list[str]:
    """Writes the task's pictures of the first `count` images of `loader`; returns the paths.

    Runs on one process: `variables` must live on this process's devices (numpy arrays, or
    `jaxseg.runtime.distributed.gather` of global ones).
    """
    predict = compiler_options.jit(task.predict)
    paths: list[str] = []
    for batch in loader:
        if len(paths) >= count:
            break
        inputs = {k: batch[k] for k in task.eval_keys}
        predictions = jax.device_get(predict(variables, inputs))
        take = count - len(paths)
        batch = {k: v[:take] for k, v in batch.items()}
        predictions = jax.tree_util.tree_map(lambda p, n=take: p[:n], predictions)
        paths += task.write_pictures(batch, predictions, directory, start=len(paths))
    return paths


def picture_arrays(task, variables, loader, count: int) -> dict[str, np.ndarray]:
    """Returns `{'pictures/NNN': uint8 [H, W, 3]}`: the task's pictures of the first images.

    What `write_pictures` draws, read back as arrays for TensorBoard's image summaries.
    Every process must call it (it reads the same batches); `variables` as for
    `write_pictures`.
    """
    with tempfile.TemporaryDirectory() as directory:
        paths = write_pictures(task, variables, loader, directory, count=count)
        arrays = {}
        for index, path in enumerate(paths):
            with Image.open(path) as image:
                arrays[f"pictures/{index:03d}"] = np.asarray(image.convert("RGB"))
            os.remove(path)
    return arrays
