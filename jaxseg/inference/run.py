"""The library calls behind `eval.py`.

`evaluate(config, workdir)` restores the best checkpoint of `<workdir>/checkpoints` (or step
`config.eval.checkpoint`), evaluates the validation split at full resolution, prints the
metrics table and writes `metrics.json` and pictures in `pictures/` of `<workdir>/eval/`
(or of `output`).

`predict_images(config, workdir, pattern)` runs the same checkpoint on image files and
writes overlays and `predictions.json` into `<workdir>/images/` (or `output`; `eval.py
--images`). A folder written by `python -m jaxseg.convert` needs no config.

Neither writes anything into the workdir when given `output`: checkpoints are opened
read-only, so a read-only workdir (a shared or archived run) can be evaluated.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import ml_collections
import optax

from jaxseg.config import ConfigError, check_workdir
from jaxseg.convert.archs import get_arch
from jaxseg.convert.categories import class_names
from jaxseg.convert.checkpoint import METADATA_FILE, load_converted
from jaxseg.evaluation.images import (
    DEFAULT_MAX_SIZE,
    ImageFiles,
    NothingPredictedError,
    find_images,
)
from jaxseg.models import model_entry
from jaxseg.runtime import distributed, sharding
from jaxseg.runtime.checkpointing import Checkpointer
from jaxseg.runtime.compilation import setup_compilation_cache
from jaxseg.runtime.metrics_writer import json_safe
from jaxseg.tasks import TASKS
from jaxseg.train.evaluate import evaluate_dataset, write_pictures
from jaxseg.train.loop import abstract_train_state, prepare
from jaxseg.train.step import make_eval_step

__all__ = ["evaluate", "predict_images"]


def _output_directory(output: str | None, workdir: str, default: str, what: str) -> str:
    """Returns `output` (or `<workdir>/<default>`) as an absolute path, created and writable.

    Raises:
      ValueError: if it cannot be created or written; for the default folder, the message
        says that the workdir may be read-only and names `--output`.
    """
    path = os.path.abspath(os.path.expanduser(output or os.path.join(workdir, default)))
    try:
        return check_workdir(path)
    except ValueError as e:
        cause = e.__cause__
        reason = getattr(cause, "strerror", None) or str(e)
        if output:
            raise ConfigError(f"--output {path} is not writable: {reason}") from cause
        raise ConfigError(
            f"{path} is not writable ({reason}): give --output DIR (output= in Python) to "
            f"write the {what} elsewhere; nothing else is written into the workdir, so a "
            "read-only workdir can be evaluated"
        ) from cause


def evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, output: str | None = None
) -> dict[str, Any]:
    """Evaluates the best (or `config.eval.checkpoint`) checkpoint of `workdir`; returns metrics.

    Args:
      config: the training config.
      workdir: the training workdir (only read: its checkpoints are opened read-only).
      output: the folder for `metrics.json` and `pictures/`; default `<workdir>/eval`.

    Raises:
      ValueError: bad config (as for training), an output folder that cannot be written
        (checked first, before anything is restored or compiled), no checkpoint in
        `workdir`, an unknown checkpoint step, or a checkpoint whose shapes differ from
        the model's.
    """
    task = prepare(config)
    distributed.initialize(config.distributed)  # before anything touches a device
    workdir = os.path.abspath(os.path.expanduser(workdir))
    eval_dir = _output_directory(output, workdir, "eval", "evaluation")
    mesh = sharding.make_mesh()
    host_variables, shardings, step, directory = _restore_variables(task, config, workdir, mesh)
    variables = sharding.put(host_variables, shardings.variables)

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
            json.dump(json_safe(result), f, indent=2)
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


def _restore_variables(task, config: ml_collections.ConfigDict, workdir: str, mesh):
    """Returns `(variables, step shardings, step, checkpoints folder)` of the best or
    configured step: the variables as host (numpy) arrays, whatever devices wrote them.

    Raises:
      ValueError: no checkpoint, an unknown step, arrays that do not fit the model.
    """
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise ConfigError(
            f"no checkpoints in {directory}: train first (train.py --workdir {workdir})"
        )
    checkpointer = Checkpointer(directory, create=False, best_metric=task.best_metric)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise ConfigError(f"no checkpoints in {directory}: train first")
        step = int(config.eval.checkpoint)
        if step < 0:
            step = checkpointer.best_step()
        elif step not in steps:
            raise ConfigError(
                f"config.eval.checkpoint = {step}: no such step in {directory} {steps}"
            )
        setup_compilation_cache(config.compilation_cache_dir)
        # Only the variables: evaluation needs no optimiser (optax.identity has no state),
        # and a converted checkpoint (python -m jaxseg.convert) has none.
        abstract_state = abstract_train_state(task, optax.identity(), config, mesh)
        variables = checkpointer.restore_variables(step, abstract_state)
    finally:
        checkpointer.close()
    shardings = sharding.step_shardings(abstract_state, mesh, mode=config.sharding.params)
    return variables, shardings, step, directory


def _converted_metadata(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def predict_images(
    config: ml_collections.ConfigDict | None,
    workdir: str,
    pattern: str,
    *,
    output: str | None = None,
    score_threshold: float = 0.5,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> list[str]:
    """Runs a checkpoint on the image files `pattern` names; returns the paths written.

    Args:
      config: the training config (its task draws and describes the predictions), or None
        when `workdir` is a folder written by `python -m jaxseg.convert`: its model and
        torchvision's class names are used.
      workdir: a training workdir or a converted folder (best / configured step).
      pattern: a glob of image files, one file, or a directory (its files with an image
        extension); any size, RGB / grey / RGBA, PNG / JPEG / ...
      output: the folder to write into; default `<workdir>/images`.
      score_threshold: of the instance detections drawn and listed.
      max_size: the longest side, in pixels, of the image inside the network input: a larger
        image is shrunk to it (bilinear), predicted, and its predictions mapped back to its
        own pixels (boxes scaled, masks pasted at full size, class maps resized
        nearest-neighbour). Bounds the memory per image. None or 0: no cap.

    A converted folder's `preprocessing` (torchvision's resize rule) is applied, also with a
    config, then the `max_size` cap; otherwise images are predicted at their own size up to
    the cap. Images are decoded one at a time. A file that is not a readable image (empty,
    not an image, truncated, over PIL's decompression-bomb limit) is skipped with a
    warning naming it and the reason, and listed under `skipped` in `predictions.json`;
    the others are predicted. Each image gets an overlay PNG; `predictions.json` lists them
    (see `jaxseg.evaluation.images`).

    Raises:
      NothingPredictedError: (a ValueError) if none of the files is a readable image;
        nothing is written then (an output folder made for the run is removed).
      ValueError: nothing matches `pattern`, an output folder that cannot be written
        (checked before anything is restored), no config for a workdir that is not a
        converted folder, a converted backbone (no predictions), or the checkpoint errors
        of `evaluate`.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if max_size is not None and max_size < 0:
        raise ConfigError(f"max_size must be positive (or 0: no cap), got {max_size}")
    try:
        images = ImageFiles(find_images(pattern), source=pattern)
    except ValueError as e:  # nothing matches: the user's argument
        raise ConfigError(str(e)) from e
    metadata = _converted_metadata(workdir)
    if config is None and metadata is None:
        raise ConfigError(
            f"{workdir} holds no {METADATA_FILE}: give --config, or a folder written by "
            "python -m jaxseg.convert"
        )
    preprocessing = dict(metadata["preprocessing"]) if metadata else {}
    if max_size:
        preprocessing["max_side"] = int(max_size)
    default = os.path.join(workdir, "images")
    created = not os.path.isdir(os.path.abspath(os.path.expanduser(output or default)))
    directory = _output_directory(output, workdir, "images", "predictions")
    try:
        if config is not None:
            task = prepare(config)
            mesh = sharding.make_mesh()
            variables, _, step, _ = _restore_variables(task, config, workdir, mesh)
            written = task.write_image_predictions(
                variables, images, directory, preprocessing=preprocessing or None
            )
            source = f"{config.model.name}, checkpoint step {step}"
        else:
            written = _converted_predictions(
                workdir,
                metadata,
                images,
                directory,
                preprocessing=preprocessing,
                score_threshold=score_threshold,
            )
            source = f"converted {metadata['arch']} ({metadata.get('source') or workdir})"
    except NothingPredictedError:
        if created and not os.listdir(directory):
            os.rmdir(directory)  # leave no empty folder behind
        raise
    skipped = len(images.skipped)
    note = f", {skipped} skipped (not readable images, named above)" if skipped else ""
    print(
        f"{source} on {images.read} images{note}: {len(written)} files in {directory}",
        file=sys.stdout,
        flush=True,
    )
    return written


def _converted_predictions(workdir, metadata, images, directory, *, preprocessing, score_threshold):
    if metadata.get("prefix"):
        raise ConfigError(
            f"{workdir} holds {metadata['arch']} nested under {metadata['prefix']!r} (for "
            "init_from), not a model that predicts"
        )
    model, variables = load_converted(workdir)
    arch = metadata["arch"]
    model_name = get_arch(arch).model_name
    if model_name is None:
        raise ConfigError(f"{workdir} holds a {arch} backbone: it has no predictions to draw")
    task = TASKS[model_entry(model_name).task]
    return task.write_model_image_predictions(
        model,
        variables,
        images,
        class_names(arch, model.num_classes),
        directory,
        preprocessing=preprocessing,
        score_threshold=score_threshold,
    )
