"""`Predictor`: a trained or converted model as a function of uint8 images of any size."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxseg import compiler_options
from jaxseg.config import ConfigError
from jaxseg.convert.archs import get_arch
from jaxseg.convert.categories import class_names as converted_class_names
from jaxseg.convert.checkpoint import METADATA_FILE, load_converted
from jaxseg.models import model_entry
from jaxseg.predict.function import KINDS, input_specs, prediction_function
from jaxseg.predict.restore import converted_metadata, restore_variables
from jaxseg.runtime import sharding
from jaxseg.serving import canvas_multiple, check_canvas, predict_in_batches
from jaxseg.tasks import TASKS
from jaxseg.train.loop import prepare

__all__ = ["Predictor"]


class Predictor:
    """Predicts on uint8 RGB images of any size; results come back in each image's pixels.

        predictor = Predictor.from_workdir("runs/fcn8s")                  # converted: no config
        predictor = Predictor.from_workdir(workdir, config, canvas=(800, 1344), batch_size=4)
        results = predictor([image1, image2])                             # [H, W, 3] uint8 each

    Semantic models give per image `{'classes': int32 [H, W], 'size', 'input_size'}`;
    instance models `{'boxes': float32 [N, 4] xyxy, 'scores' [N], 'classes' int32 [N] (1..K),
    'masks': bool [N, H, W], 'size', 'input_size'}` (plus `'rle'`, COCO run-length
    encodings, with `rle=True`), the N detections of at least `score_threshold`, best first.

    Each image is resized by the model's rule (a converted folder's `preprocessing`: shorter
    side to 800 for Mask R-CNN, ...; capped by `max_side`) and padded into a canvas: the
    given `canvas` (an image that would not fit is shrunk to fit, never cropped), or per
    image the smallest multiple of 32 that holds it. Images sharing a canvas go through
    in batches of `batch_size` (the last one padded with empty slots), so the function
    compiles once per canvas. The resize, normalisation, the model, mask pasting and the
    score threshold run inside one jitted function (`function`, the one `jaxseg.export`
    serialises); the host only cuts the results to each image.

    Attributes:
      kind: 'semantic' or 'instance'.
      class_names: the name of each class id (instance: index 0 the background).
      preprocessing: the resize rule and normalisation.
      canvas, batch_size, score_threshold, min_size: as given.
      function: the pure `predict(variables, images, sizes, input_sizes, score_threshold)`
        (`jaxseg.predict.prediction_function`).
      variables: the model's variables (on the default device).
      source: where the weights came from: `workdir`, `checkpoint`, `step`, `model`.
    """

    def __init__(
        self,
        model: Any,
        variables: Any,
        *,
        kind: str,
        class_names: Sequence[str],
        preprocessing: Mapping[str, Any] | None = None,
        canvas: tuple[int, int] | None = None,
        batch_size: int = 1,
        score_threshold: float = 0.5,
        min_size: int = 1,
        source: Mapping[str, Any] | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        _check_threshold(score_threshold)
        self.kind = kind
        self.model = model
        self.class_names = tuple(class_names)
        self.preprocessing = dict(preprocessing or {})
        self.multiple = canvas_multiple(kind)
        self.canvas = check_canvas(canvas, multiple=self.multiple) if canvas is not None else None
        self.batch_size = int(batch_size)
        self.score_threshold = float(score_threshold)
        self.min_size = int(min_size)
        self.source = dict(source or {})
        self.variables = jax.device_put(variables)
        self.function = prediction_function(model, kind, preprocessing=self.preprocessing)
        self._jitted = compiler_options.jit(self.function, static_argnames="canvas")

    @classmethod
    def from_workdir(
        cls,
        workdir: str | os.PathLike,
        config: ml_collections.ConfigDict | None = None,
        *,
        canvas: tuple[int, int] | None = None,
        batch_size: int = 1,
        score_threshold: float = 0.5,
        max_side: int | None = None,
    ) -> Predictor:
        """Returns the predictor of a training workdir or of a `python -m jaxseg.convert` folder.

        Args:
          workdir: a training workdir (with `config`: its best checkpoint, or step
            `config.eval.checkpoint`) or a converted folder (no config needed: its model,
            torchvision's class names and resize rule).
          config: the training config, or None for a converted folder.
          canvas, batch_size, score_threshold: see the class.
          max_side: cap on the longer side of the network's image (`eval.py --max_size`);
            None or 0: none.

        A converted folder's resize rule applies with a config too (a run that started from
        converted weights and was saved there).

        Raises:
          ConfigError: (a ValueError) no such workdir, a folder that is neither a training
            workdir with a config nor a converted folder, a converted backbone (it
            predicts nothing), a bad canvas, or the checkpoint errors of `eval.py`.
        """
        workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
        if not os.path.isdir(workdir):
            raise ConfigError(f"--workdir {workdir}: no such directory")
        if max_side is not None and max_side < 0:
            raise ConfigError(f"max_side must be positive (or 0: no cap), got {max_side}")
        metadata = converted_metadata(workdir)
        if config is None and metadata is None:
            raise ConfigError(
                f"--workdir {workdir} holds no {METADATA_FILE}: give --config (a training "
                "workdir), or a folder written by python -m jaxseg.convert"
            )
        preprocessing = dict(metadata["preprocessing"]) if metadata else {}
        if max_side:
            preprocessing["max_side"] = int(max_side)
        if config is not None:
            try:
                kind = model_entry(config.model.name).task
            except ValueError as e:  # an unknown model name, with the closest known one
                raise ConfigError(f"config.model.name: {e}") from e
        else:
            kind = _converted_kind(workdir, metadata)
        if canvas is not None:
            try:
                canvas = check_canvas(canvas, what="--canvas", multiple=canvas_multiple(kind))
            except ValueError as e:
                raise ConfigError(str(e)) from e
        if config is not None:
            task = prepare(config)
            mesh = sharding.make_mesh()
            variables, _, step, directory = restore_variables(task, config, workdir, mesh)
            model, kind, names = task.model, task.entry.task, task.label_names
            min_size = task.min_image_size
            source = {
                "workdir": workdir,
                "checkpoint": os.path.join(directory, str(step)),
                "step": int(step),
                "model": config.model.name,
            }
        else:
            model, variables, kind, names = _converted(workdir, metadata)
            min_size = TASKS[kind].min_image_size
            source = {
                "workdir": workdir,
                "checkpoint": os.path.join(workdir, "checkpoints", "0"),
                "step": 0,
                "model": get_arch(metadata["arch"]).model_name,
                "arch": metadata["arch"],
                "weights": metadata.get("source") or "",
            }
        return cls(
            model,
            variables,
            kind=kind,
            class_names=names,
            preprocessing=preprocessing,
            canvas=canvas,
            batch_size=batch_size,
            score_threshold=score_threshold,
            min_size=min_size,
            source=source,
        )

    def __call__(
        self,
        images: Sequence[np.ndarray],
        *,
        score_threshold: float | None = None,
        rle: bool = False,
    ) -> list[dict[str, Any]]:
        """Returns one result per image (see the class), in order.

        Args:
          images: uint8 [H, W, 3] RGB images, any sizes.
          score_threshold: instead of the predictor's, for this call.
          rle: add COCO RLE masks (instance models; needs pycocotools).

        Raises:
          ValueError: an image that is not uint8 [H, W, 3], naming its index.
        """
        threshold = self.score_threshold if score_threshold is None else score_threshold
        _check_threshold(threshold)
        return predict_in_batches(
            images,
            self._run,
            kind=self.kind,
            preprocessing=self.preprocessing,
            canvas=self.canvas,
            batch_size=self.batch_size,
            score_threshold=threshold,
            min_size=self.min_size,
            rle=rle,
        )

    def _run(
        self, inputs: Mapping[str, np.ndarray], threshold: float, canvas: tuple[int, int]
    ) -> dict[str, np.ndarray]:
        outputs = self._jitted(
            self.variables,
            inputs["images"],
            inputs["sizes"],
            inputs["input_sizes"],
            np.float32(threshold),
            canvas=tuple(canvas),
        )
        return {k: np.asarray(v) for k, v in jax.device_get(outputs).items()}

    def input_specs(self, *, canvas: tuple[int, int], batch_size: int) -> tuple[Any, ...]:
        """Returns the `jax.ShapeDtypeStruct`s of `function`'s inputs for a canvas and batch."""
        canvas = check_canvas(canvas, multiple=self.multiple)
        return input_specs(self.variables, canvas=canvas, batch_size=batch_size)


def _check_threshold(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"score_threshold must be a number, got {value!r}")


def _converted_kind(workdir: str, metadata: Mapping[str, Any]) -> str:
    """Returns the kind of a converted folder's model.

    Raises:
      ConfigError: for a backbone (nested under a prefix, or without heads).
    """
    arch = metadata["arch"]
    if metadata.get("prefix"):
        raise ConfigError(
            f"{workdir} holds {arch} nested under {metadata['prefix']!r} (for init_from), "
            "not a model that predicts"
        )
    model_name = get_arch(arch).model_name
    if model_name is None:
        raise ConfigError(f"{workdir} holds a {arch} backbone: it has no predictions")
    return model_entry(model_name).task


def _converted(workdir: str, metadata: Mapping[str, Any]):
    """Returns `(model, variables, kind, class names)` of a converted folder."""
    kind = _converted_kind(workdir, metadata)
    model, variables = load_converted(workdir)
    return model, variables, kind, converted_class_names(metadata["arch"], model.num_classes)
