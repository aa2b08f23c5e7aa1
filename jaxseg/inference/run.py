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

from jaxseg.config import ConfigError, check_workdir
from jaxseg.convert.checkpoint import METADATA_FILE
from jaxseg.evaluation.images import (
    DEFAULT_MAX_SIZE,
    ImageFiles,
    NothingPredictedError,
    find_images,
    write_instance_image,
    write_predictions_json,
    write_semantic_image,
)
from jaxseg.predict import Predictor, converted_metadata, restore_variables
from jaxseg.runtime import distributed, sharding
from jaxseg.runtime.metrics_writer import json_safe
from jaxseg.train.evaluate import evaluate_dataset, write_pictures
from jaxseg.train.loop import prepare
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
    host_variables, shardings, step, directory = restore_variables(task, config, workdir, mesh)
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
      score_threshold: of the instance detections drawn and listed (with a config too).
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
    metadata = converted_metadata(workdir)
    if config is None and metadata is None:
        raise ConfigError(
            f"{workdir} holds no {METADATA_FILE}: give --config, or a folder written by "
            "python -m jaxseg.convert"
        )
    default = os.path.join(workdir, "images")
    created = not os.path.isdir(os.path.abspath(os.path.expanduser(output or default)))
    directory = _output_directory(output, workdir, "images", "predictions")
    try:
        predictor = Predictor.from_workdir(
            workdir, config, score_threshold=score_threshold, max_side=max_size or None
        )
        written = _write_image_predictions(predictor, images, directory)
        if config is not None:
            source = f"{config.model.name}, checkpoint step {predictor.source['step']}"
        else:
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


def _write_image_predictions(predictor: Predictor, images: ImageFiles, directory: str) -> list[str]:
    """Writes each image's overlay (and class map) and `predictions.json`; returns the paths.

    One image at a time (`ImageFiles` decodes them as they come), each on the smallest
    canvas that holds it: one compile per distinct canvas.
    """
    paths, records = [], []
    for index, (name, image) in enumerate(images):
        (result,) = predictor([image])
        if predictor.kind == "semantic":
            written, record = write_semantic_image(
                directory,
                index,
                name,
                image,
                result["classes"],
                predictor.class_names,
                input_size=result["input_size"],
            )
        else:
            written, record = write_instance_image(
                directory,
                index,
                name,
                image,
                result["boxes"],
                result["classes"],
                result["scores"],
                result["masks"],
                predictor.class_names,
                input_size=result["input_size"],
            )
        paths += written
        records.append(record)
    paths.append(write_predictions_json(directory, records, skipped=images.skipped))
    return paths
