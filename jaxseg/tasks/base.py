"""What the generic training loop needs from a task.

The loop (`jaxseg.train.loop`) and `eval.py` know nothing about pixels or boxes: a task
builds the model and the loaders, says how to initialise variables, computes the loss,
summarises evaluation batches into metrics and draws pictures. Semantic segmentation
(FCN) is `jaxseg.tasks.semantic.SemanticSegmentationTask`, instance segmentation (Mask
R-CNN) `jaxseg.tasks.instance.InstanceSegmentationTask`;
`jaxseg.models.MODELS` gives each model name its module, its task's kind (a key of
`jaxseg.tasks.TASKS`) and the settings the name fixes.
"""

from __future__ import annotations

import abc
import difflib
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg.config import ConfigError, model_settings
from jaxseg.data import catalog, coco_builder
from jaxseg.models import ModelEntry, build_model

__all__ = ["Task", "dataset_kwargs"]


_COCO_NAMES = ("coco", "jaxseg_coco")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dataset_kwargs(dataset: ml_collections.ConfigDict) -> dict[str, Any]:
    """Returns the TFDS builder settings of `config.dataset`: config, data and manual dirs.

    `dataset.annotations` / `dataset.images` (your own COCO-format data) become the
    `CocoFormatConfig` of `jaxseg.data.coco_builder.custom_config`, named after the data's
    content, so each source gets its own build in the data dir.

    Annotations replace a config name (`dataset.config` "2017", or "instance" left from a
    shapes config built on).

    Raises:
      ValueError: annotations given for another dataset than "coco", or beside a
        BuilderConfig object in `dataset.config`; images without annotations; a train or
        eval split that the annotations do not give.
    """
    kwargs: dict[str, Any] = {}
    manual_dir = os.path.expanduser(dataset.manual_dir) if dataset.manual_dir else None
    annotations = {k: v for k, v in dict(dataset.get("annotations") or {}).items() if v}
    images = dataset.get("images") or ""
    if annotations:
        if dataset.name not in _COCO_NAMES:
            raise ValueError(
                "config.dataset.annotations is for COCO-format data (config.dataset.name = "
                f"'coco'), but config.dataset.name is {dataset.name!r}"
            )
        if dataset.config and not isinstance(dataset.config, str):
            raise ValueError(
                "config.dataset.annotations and config.dataset.config both say which data to "
                f"read (config = {dataset.config!r}): give only one"
            )
        # A config *name* (say "2017" or "instance", left from the config file built on)
        # picks a preset; the annotation files given replace it.
        for key in ("train_split", "eval_split"):
            split = str(dataset[key]).partition("[")[0]
            if split not in annotations:
                raise ValueError(
                    f"config.dataset.{key} = {dataset[key]!r}, but config.dataset.annotations "
                    f"gives only {sorted(annotations)}: set config.dataset.annotations.{split}"
                )
        if not isinstance(images, str):
            images = {k: v for k, v in dict(images).items() if v}
        kwargs["config"] = coco_builder.custom_config(annotations, images, manual_dir=manual_dir)
    elif images:
        raise ValueError(
            f"config.dataset.images = {images!r} but config.dataset.annotations names no "
            "annotation file: set config.dataset.annotations.train (and .validation)"
        )
    elif dataset.config:
        config = dataset.config
        # A name given on the command line may parse as a number (`--config.dataset.config=2017`).
        kwargs["config"] = str(config) if isinstance(config, int | float) else config
    if dataset.data_dir:
        kwargs["data_dir"] = os.path.expanduser(dataset.data_dir)
    if manual_dir:
        kwargs["manual_dir"] = manual_dir
    return kwargs


class Task(abc.ABC):
    """A training task: model, data, loss, evaluation and pictures for one kind of problem.

    Attributes:
      config: the training config.
      metric_names: the scalar evaluation metrics the task produces.
      default_best_metric: the one of them that ranks checkpoints unless
        `config.eval.best_metric` names another (`best_metric` is the one in force).
      train_keys, eval_keys: the batch entries sent to the device in training / evaluation.
      min_image_size: smallest input height and width the model accepts.
      label_names: the name of each class id the model predicts (after `__init__`).
      trainable: None when every parameter trains; otherwise a method that returns bools
        like the params, False on frozen ones (the optimiser leaves those alone).
    """

    metric_names: tuple[str, ...]
    default_best_metric: str
    train_keys: tuple[str, ...]
    eval_keys: tuple[str, ...]
    min_image_size: int
    trainable: Callable[[Any], Any] | None = None

    def __init__(self, config: ml_collections.ConfigDict, entry: ModelEntry):
        self.config = config
        self.entry = entry

    def build_model(self, num_classes: int) -> nn.Module:
        """Returns the model `config.model` describes, with `num_classes` unless it says
        otherwise, in the compute dtype `config.dtype`."""
        settings = model_settings(self.config)
        if "dtype" in settings:
            raise ConfigError("config.model.dtype: the compute dtype is config.dtype")
        settings.setdefault("num_classes", num_classes)
        # check_config, which runs after the task is made, refuses a dtype not listed here.
        settings["dtype"] = _DTYPES.get(self.config.dtype, jnp.float32)
        return build_model(self.config.model.name, **settings)

    @property
    def best_metric(self) -> str:
        """The evaluation metric that ranks checkpoints (higher is better)."""
        return self.config.eval.best_metric or self.entry.best_metric or self.default_best_metric

    def check_common(self) -> None:
        """Raises ConfigError for what every task can know before training starts.

        A `config.eval.best_metric` the task does not produce, a split the dataset does not
        have (read from the prepared dataset's info: building a jaxseg dataset on first use
        happens here, before anything compiles), a canvas the model cannot take.
        """
        if self.best_metric not in self.metric_names:
            close = difflib.get_close_matches(self.best_metric, self.metric_names, n=1)
            raise ConfigError(
                f"config.eval.best_metric = {self.best_metric!r} is not a metric of "
                f"{self.config.model.name}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; it reports {list(self.metric_names)} ('' picks {self.default_best_metric})"
            )
        dataset = self.config.dataset
        _, builder = catalog.load_builder(dataset.name, **self._dataset_kwargs())
        for key in ("train_split", "eval_split"):
            try:
                examples = builder.info.splits[dataset[key]].num_examples
            except (ValueError, KeyError, AssertionError) as e:
                raise ConfigError(
                    f"config.dataset.{key} = {dataset[key]!r} is not a split of "
                    f"{builder.info.full_name}: {str(e).splitlines()[0]}"
                ) from None
            if not examples:
                raise ConfigError(
                    f"config.dataset.{key} = {dataset[key]!r} holds no examples of "
                    f"{builder.info.full_name}"
                )
        for key in ("image_size", "eval_image_size"):
            problem = self.image_size_problem(int(dataset[key]))
            if problem:
                raise ConfigError(f"config.dataset.{key} = {dataset[key]}: {problem}")

    def image_size_problem(self, size: int) -> str | None:
        """Returns why the model cannot take a `size` x `size` canvas, or None if it can."""
        del size
        return None

    def _dataset_kwargs(self) -> dict[str, Any]:
        """Returns the TFDS builder settings of `config.dataset` (see `dataset_kwargs`)."""
        # Kept for the task's life: a custom COCO source is fingerprinted once per run.
        if "_cached_dataset_kwargs" not in self.__dict__:
            self._cached_dataset_kwargs = dataset_kwargs(self.config.dataset)
        return dict(self._cached_dataset_kwargs)

    @abc.abstractmethod
    def check(self) -> None:
        """Raises ValueError where the config contradicts the dataset (before any compile)."""

    @abc.abstractmethod
    def make_loader(self, split: str, **settings: Any) -> grain.DataLoader:
        """Returns the task's loader of `config.dataset`'s `split` with the loader
        `settings` that `train_loader` / `eval_loader` give (batch size, canvas, shards...)."""

    def train_loader(
        self, *, batch_size: int, seed: int, shard_index: int, shard_count: int
    ) -> grain.DataLoader:
        """Returns the endless, shuffled, augmented training loader (per-process batch)."""
        dataset = self.config.dataset
        return self.make_loader(
            dataset.train_split,
            batch_size=batch_size,
            image_size=int(dataset.image_size),
            train=True,
            seed=seed,
            shard_index=shard_index,
            shard_count=shard_count,
            worker_count=int(dataset.worker_count),
            scale_range=tuple(dataset.scale_range),
            flip=bool(dataset.flip),
        )

    def eval_loader(
        self, *, batch_size: int, shard_index: int, shard_count: int
    ) -> grain.DataLoader:
        """Returns the one-epoch, in-order evaluation loader (per-process batch)."""
        dataset = self.config.dataset
        return self.make_loader(
            dataset.eval_split,
            batch_size=batch_size,
            image_size=int(dataset.eval_image_size),
            train=False,
            seed=0,
            shard_index=shard_index,
            shard_count=shard_count,
        )

    @abc.abstractmethod
    def input_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Returns the shapes and dtypes of a training batch's `train_keys` (no data read)."""

    @abc.abstractmethod
    def init_variables(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, Any]:
        """Returns the model's variables `{'params', ...}` for inputs shaped like `batch`."""

    @abc.abstractmethod
    def loss_fn(
        self, params: Any, model_state: Any, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
        """Returns `(loss, (metrics, new_model_state))` of one training batch.

        `loss` is the float32 scalar to differentiate with respect to `params`; `metrics`
        are scalars to log (averaged over the logging interval).

        Where a loss is computed follows torchvision: a semantic model returns logits and
        its task applies `jaxseg.models.softmax_cross_entropy`; Mask R-CNN's losses need
        the matching and sampling inside its forward pass, so the model returns them
        (`jaxseg.detection.losses`) and its task sums them.
        """

    @abc.abstractmethod
    def eval_step(self, variables: dict[str, Any], batch: dict[str, jax.Array]) -> Any:
        """Returns a pytree for one evaluation batch (counts, summed by `reduce_eval`)."""

    def reduce_eval(self, outputs: list[Any]) -> Any:
        """Returns the totals of the host copies of `eval_step`'s outputs (default: their sum).

        A task whose evaluation needs every prediction (COCO AP) keeps them instead.
        """
        return jax.tree_util.tree_map(
            lambda *c: np.sum(np.stack(c).astype(np.int64), axis=0), *outputs
        )

    @abc.abstractmethod
    def eval_metrics(self, totals: Any) -> dict[str, Any]:
        """Returns the metrics (floats, and lists / dicts of floats) of the summed counts."""

    @abc.abstractmethod
    def predict(self, variables: dict[str, Any], batch: dict[str, jax.Array]) -> Any:
        """Returns the predictions drawn in the pictures for one evaluation batch."""

    @abc.abstractmethod
    def write_pictures(
        self, batch: dict[str, Any], predictions: Any, directory: str, *, start: int
    ) -> list[str]:
        """Writes a picture per valid image of `batch`; returns the paths written."""

    @abc.abstractmethod
    def format_metrics(self, metrics: dict[str, Any]) -> str:
        """Returns `metrics` as a human-readable table."""
