"""The keys every training config has, their defaults, and the checks run before any compile.

A config file builds on `base_config()` and overrides what it needs:

    def get_config():
        config = base_config()
        config.model.name = "fcn8s"
        ...
        return config

`check_config` then rejects keys that `base_config` does not know (a typo would otherwise be
silently ignored), values out of range, a workdir that cannot be written, and images
smaller than the network accepts. Model settings (`config.model` minus `name`) are checked
by `jaxseg.models.build_model`, which knows each model's attributes.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from typing import Any

import ml_collections

__all__ = ["ConfigError", "base_config", "check_config", "check_workdir", "model_settings"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "poly", "step", "cosine")
DTYPES = ("float32", "bfloat16")
LOSS_REDUCTIONS = ("mean", "sum")
PARAM_SHARDINGS = ("replicated", "fsdp")
INITIALIZE_MODES = ("auto", "yes", "no")


class ConfigError(ValueError):
    """A config, workdir or checkpoint that cannot be trained or evaluated as given.

    Raised before anything compiles; `train.py` and `eval.py` print its message alone (one
    line, no traceback).
    """


def base_config() -> ml_collections.ConfigDict:
    """Returns a ConfigDict holding every known key with its default."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 16  # global: split over processes and over the `data` mesh axis
    config.num_train_steps = 1000
    config.log_every_steps = 50
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2  # the last K, plus the best by validation `best_metric`
    # Steps with a NaN/Inf loss or gradient are skipped (not applied); this many in a row
    # stop training with an error (jaxseg.runtime.nonfinite).
    config.max_consecutive_nonfinite = 5
    config.dtype = "float32"  # compute dtype; parameters and losses stay float32
    # Workdir (or its checkpoints/ folder) of a coarser net to start from: parameters with
    # the same path and shape are copied, the others (new score layers) keep their init.
    config.init_from = ""
    # Persistent XLA compilation cache ("" disables it); $JAXSEG_COMPILATION_CACHE wins.
    config.compilation_cache_dir = os.path.join("~", ".cache", "jaxseg", "xla")
    config.log_compiles = False  # log every XLA compilation and why (jax_log_compiles)

    # Scale-out (docs/scaling.md): parameters and optimiser state "replicated" on every
    # device, or "fsdp" (split along `data`); multi-process start-up.
    config.sharding = ml_collections.ConfigDict()
    config.sharding.params = "replicated"
    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = "auto"  # "auto": when a launcher/config says so; "yes"; "no"
    config.distributed.coordinator_address = ""  # "host:port" of process 0; "" = detect
    config.distributed.num_processes = 0  # 0 = detect
    config.distributed.process_id = -1  # -1 = detect
    # Seconds a process may go silent before the others call it lost and exit (non-zero,
    # naming it): restart them all to resume from the last complete checkpoint.
    config.distributed.lost_process_timeout_s = 60.0

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "jaxseg_shapes"
    # TFDS builder config: a name ("" = the dataset's default) or, in a config file, a
    # BuilderConfig object (jaxseg.data.ShapesConfig(...), CocoFormatConfig(...)).
    config.dataset.config = ml_collections.config_dict.FieldReference("", field_type=object)
    config.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.dataset.manual_dir = ""  # VOCdevkit / COCO root for datasets built from files
    # Your own COCO-format data (dataset.name "coco"): the annotation JSON of each split
    # ("" = no such split) and the image folder (one for every split, or in a config file
    # {split: folder}). Relative paths are relative to manual_dir, else the working dir.
    config.dataset.annotations = ml_collections.ConfigDict(
        {"train": "", "validation": "", "test": ""}
    )
    config.dataset.images = ml_collections.config_dict.FieldReference("", field_type=object)
    config.dataset.train_split = "train"
    config.dataset.eval_split = "validation"
    config.dataset.image_size = 64  # training crop (H = W)
    config.dataset.eval_image_size = 64  # evaluation canvas; >= every image: full resolution
    config.dataset.scale_range = (0.5, 2.0)
    config.dataset.flip = True
    config.dataset.worker_count = 0
    # Instance segmentation (Mask R-CNN) only:
    config.dataset.max_instances = 100  # ground-truth slots per image
    config.dataset.mask_size = 112  # side of each ground-truth mask cut to its box
    config.dataset.min_size = 0  # torchvision-style resize (e.g. 800 / 1333); 0 = fit canvas
    config.dataset.max_size = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "fcn8s"  # any other key is a model attribute (see jaxseg.models)

    config.loss = ml_collections.ConfigDict()
    config.loss.reduction = "mean"  # "sum": the FCN reference's loss summed over pixels
    config.loss.aux_weight = 0.5  # weight of an auxiliary head's loss (FCN-ResNet)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9  # sgd momentum; adam's b1
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 5e-4  # on kernels only (the reference: decay_mult 0 on biases)
    config.optimizer.schedule = "poly"
    config.optimizer.poly_power = 0.9
    config.optimizer.decay_boundaries = (2 / 3, 8 / 9)  # step schedule, fractions of training
    config.optimizer.decay_factor = 0.1
    config.optimizer.warmup_steps = 0
    config.optimizer.grad_clip_norm = 0.0  # 0 = no clipping

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 16
    config.eval.checkpoint = -1  # eval.py: -1 the best, else that step
    config.eval.num_pictures = 6  # eval.py's picture files
    config.eval.summary_pictures = 3  # pictures in TensorBoard at each evaluation (0: none)
    config.eval.best_metric = ""  # ranks checkpoints; "" = the task's (mean_iou, segm_AP)
    return config


def model_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Returns `config.model` without `name`, as keyword arguments for `build_model`."""
    settings = dict(config.model.to_dict())
    settings.pop("name", None)
    return settings


def _unknown_keys(config: Any, reference: Any, prefix: str) -> list[str]:
    """Returns the dotted keys of `config` absent from `reference` (model settings excepted)."""
    unknown = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if path == "model":
            continue
        if key not in reference:
            close = difflib.get_close_matches(key, list(reference.keys()), n=1)
            unknown.append(path + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
        elif isinstance(value, ml_collections.ConfigDict):
            if isinstance(reference[key], ml_collections.ConfigDict):
                unknown += _unknown_keys(value, reference[key], path + ".")
    return unknown


def _refuse(key: str, value: Any, requirement: str) -> None:
    raise ConfigError(f"config.{key} must be {requirement}, got {value!r}")


def _check_choice(config: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> None:
    group, _, name = key.rpartition(".")
    value = (config[group] if group else config)[name]
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config.{key} must be one of {choices}, got {value!r}{hint}")


def check_config(config: ml_collections.ConfigDict, *, min_image_size: int = 1) -> None:
    """Raises ConfigError (a ValueError) for unknown keys or impossible values of a config.

    Args:
      config: the config to check.
      min_image_size: smallest height and width (pixels) the network accepts.
    """
    unknown = _unknown_keys(config, base_config(), "")
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    if "name" not in config.model:
        raise ConfigError("config.model.name is missing")
    for key in (
        "batch_size",
        "num_train_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "max_consecutive_nonfinite",
    ):
        if int(config[key]) < 1:
            _refuse(key, config[key], ">= 1")
    _check_choice(config, "sharding.params", PARAM_SHARDINGS)
    _check_choice(config, "distributed.initialize", INITIALIZE_MODES)
    if not float(config.distributed.lost_process_timeout_s) > 0:
        _refuse(
            "distributed.lost_process_timeout_s",
            config.distributed.lost_process_timeout_s,
            "> 0 (seconds)",
        )
    _check_choice(config, "dtype", DTYPES)
    _check_choice(config, "optimizer.name", OPTIMIZERS)
    _check_choice(config, "optimizer.schedule", SCHEDULES)
    _check_choice(config, "loss.reduction", LOSS_REDUCTIONS)
    _check_optimizer(config.optimizer, int(config.num_train_steps))
    _check_dataset(config.dataset, min_image_size, config.model.name)
    if float(config.loss.aux_weight) < 0:
        _refuse("loss.aux_weight", config.loss.aux_weight, ">= 0")
    if int(config.eval.batch_size) < 1:
        _refuse("eval.batch_size", config.eval.batch_size, ">= 1")
    for key in ("num_pictures", "summary_pictures"):
        if int(config.eval[key]) < 0:
            _refuse(f"eval.{key}", config.eval[key], ">= 0")
    if int(config.eval.checkpoint) < -1:
        _refuse("eval.checkpoint", config.eval.checkpoint, "a step, or -1 for the best")


def _check_optimizer(optimizer: ml_collections.ConfigDict, num_steps: int) -> None:
    """Refuses optimiser settings no run can use (a warm-up longer than training, ...)."""
    if not float(optimizer.learning_rate) > 0:
        _refuse("optimizer.learning_rate", optimizer.learning_rate, "> 0")
    if not 0 <= float(optimizer.momentum) < 1:
        _refuse("optimizer.momentum", optimizer.momentum, "in [0, 1)")
    if float(optimizer.weight_decay) < 0:
        _refuse("optimizer.weight_decay", optimizer.weight_decay, ">= 0")
    if float(optimizer.grad_clip_norm) < 0:
        _refuse("optimizer.grad_clip_norm", optimizer.grad_clip_norm, ">= 0 (0: no clipping)")
    warmup = int(optimizer.warmup_steps)
    if not 0 <= warmup <= num_steps:
        _refuse("optimizer.warmup_steps", warmup, f">= 0 and at most num_train_steps ({num_steps})")
    if not float(optimizer.poly_power) > 0:
        _refuse("optimizer.poly_power", optimizer.poly_power, "> 0")
    if not 0 < float(optimizer.decay_factor) <= 1:
        _refuse("optimizer.decay_factor", optimizer.decay_factor, "in (0, 1]")
    boundaries = [float(b) for b in optimizer.decay_boundaries]
    if any(not 0 < b < 1 for b in boundaries) or boundaries != sorted(boundaries):
        _refuse(
            "optimizer.decay_boundaries",
            tuple(optimizer.decay_boundaries),
            "increasing fractions of training in (0, 1)",
        )


def _check_dataset(dataset: ml_collections.ConfigDict, min_image_size: int, model: str) -> None:
    for key in ("image_size", "eval_image_size"):
        size = int(dataset[key])
        if size < min_image_size:
            raise ConfigError(
                f"config.dataset.{key} = {size} is below the smallest input "
                f"{model} accepts ({min_image_size}x{min_image_size} pixels)"
            )
    scale_range = tuple(float(s) for s in dataset.scale_range)
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        _refuse(
            "dataset.scale_range", tuple(dataset.scale_range), "(low, high) with 0 < low <= high"
        )
    for key in ("train_split", "eval_split"):
        if not str(dataset[key]).strip():
            _refuse(f"dataset.{key}", dataset[key], "a split name such as 'train'")
    if int(dataset.worker_count) < 0:
        _refuse("dataset.worker_count", dataset.worker_count, ">= 0 (0: no worker processes)")
    for key in ("max_instances", "mask_size"):
        if int(dataset[key]) < 1:
            _refuse(f"dataset.{key}", dataset[key], ">= 1")
    for key in ("min_size", "max_size"):
        if int(dataset[key]) < 0:
            _refuse(f"dataset.{key}", dataset[key], ">= 0 (0: no resize)")
    if int(dataset.min_size) > int(dataset.max_size) > 0:
        raise ConfigError(
            f"config.dataset.min_size = {dataset.min_size} is above "
            f"config.dataset.max_size = {dataset.max_size}"
        )


def check_workdir(workdir: str | os.PathLike) -> str:
    """Returns `workdir` as an absolute path after checking it can be created and written.

    Raises:
      ValueError: if `workdir` is a file, cannot be created, or is not writable.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"workdir {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(f"workdir {path} is not writable: {e}") from e
    return path
