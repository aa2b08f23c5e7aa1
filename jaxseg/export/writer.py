"""`export_predictor`: a `Predictor`'s jitted function serialised with `jax.export`.

An export folder `DIR` holds::

    DIR/predict.jaxexport   jax.export serialisation (StableHLO) of the predictor's function
                            for one canvas and batch: resize, normalisation, the model, box
                            scaling, mask pasting and thresholds inside
    DIR/variables.npz       the model's variables, the function's first argument (NumPy)
    DIR/jaxseg_export.json  task, classes, canvas, batch, thresholds, preprocessing, source
                            checkpoint, jaxseg and jax versions, the variables' order
    DIR/predict.onnx        with `onnx=True` (semantic models): the same function in ONNX,
                            the variables inside as initialisers (`jaxseg.export.onnx`)

The variables stay a separate argument rather than constants baked into the StableHLO: XLA
then compiles a small module (constants of 170 MB, Mask R-CNN R50's, are folded and copied
at compile time), the artifact stays the same for fine-tuned weights, and the arrays can be
read with NumPy alone.

The folder is written beside its final place under a hidden temporary name and renamed
into place at the end, so an interrupted or failed export (Ctrl-C, a full disk) leaves no
half-written folder.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

import jaxseg
from jaxseg.config import ConfigError
from jaxseg.export.layout import (
    ARTIFACT_FILE,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    ONNX_FILE,
    VARIABLES_FILE,
)
from jaxseg.export.onnx import OnnxUnsupportedError, write_onnx
from jaxseg.predict import Predictor
from jaxseg.serving import canvas_multiple, check_canvas

__all__ = ["check_output_folder", "default_canvas", "export_predictor"]

_INPUTS = {
    "variables": "the model's variables (variables.npz, in the order of 'variables')",
    "images": "uint8 [B, H, W, 3]: each image's content at the top-left, zeros elsewhere",
    "sizes": "int32 [B, 2]: (h, w) of each content; 0 for an empty slot",
    "input_sizes": "int32 [B, 2]: (h, w) each content is resized to inside the canvas",
    "score_threshold": "float32 []: instances below it are not kept",
}
_OUTPUTS = {
    "semantic": {"classes": "int32 [B, H, W]: class ids in content pixels"},
    "instance": {
        "boxes": "float32 [B, D, 4] xyxy in content pixels",
        "scores": "float32 [B, D]",
        "classes": "int32 [B, D], 1..K",
        "keep": "bool [B, D]: valid and score >= score_threshold",
        "masks": "bool [B, D, H, W] in content pixels",
    },
}


def default_canvas(
    preprocessing: Mapping[str, Any], *, fallback: int | None = None, multiple: int = 32
) -> tuple[int, int]:
    """Returns the square canvas (sides a `multiple`) that holds every image the rule makes.

    The longer side the resize rule can give (`max_size`, else `max_side`, else the
    shorter side's `resize_size`), or `fallback` (a config's `dataset.eval_image_size`).

    Raises:
      ConfigError: if neither gives a size (then --canvas is needed).
    """
    side = (
        preprocessing.get("max_size")
        or preprocessing.get("max_side")
        or preprocessing.get("resize_size")
        or fallback
    )
    if not side:
        raise ConfigError(
            "give --canvas HEIGHTxWIDTH: the model has no resize rule to take it from"
        )
    side = math.ceil(int(side) / multiple) * multiple
    return side, side


def _variable_names(variables: Any) -> tuple[list[str], list[np.ndarray]]:
    paths_leaves, _ = jax.tree_util.tree_flatten_with_path(variables)
    names, leaves = [], []
    for path, leaf in paths_leaves:
        parts = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        names.append("/".join(parts))
        leaves.append(np.asarray(jax.device_get(leaf)))
    if len(set(names)) != len(names):
        raise ValueError("variable names collide once joined with '/'")
    return names, leaves


def check_output_folder(directory: str | os.PathLike, overwrite: bool = False) -> str:
    """Returns `directory` as an absolute path if an export may be written there.

    Raises:
      ConfigError: if it holds an export (and not `overwrite`), other files, or is a file.
    """
    directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    if os.path.isdir(directory):
        entries = os.listdir(directory)
        if METADATA_FILE in entries or ARTIFACT_FILE in entries:
            if not overwrite:
                raise ConfigError(
                    f"--output {directory} already holds an export: give --overwrite to "
                    "replace it, or choose another folder"
                )
        elif entries:
            raise ConfigError(
                f"--output {directory} is not empty and holds no export: choose a new or "
                "empty folder (nothing in it is replaced)"
            )
    elif os.path.exists(directory):
        raise ConfigError(f"--output {directory} is a file, not a folder")
    return directory


def export_predictor(
    predictor: Predictor,
    directory: str | os.PathLike,
    *,
    canvas: Sequence[int] | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    platforms: Sequence[str] | None = None,
    fallback_side: int | None = None,
    onnx: bool = False,
) -> str:
    """Writes the export of `predictor` into `directory` (layout above); returns its path.

    Args:
      predictor: a `jaxseg.predict.Predictor`.
      directory: a new or empty folder, or (with `overwrite`) a previous export.
      canvas: (H, W) (multiples of 32 for instance models); default the predictor's, else
        `default_canvas`.
      batch_size: images per call; default the predictor's.
      overwrite: replace an export already in `directory`.
      platforms: what to lower for ('cpu', 'cuda', 'rocm', 'tpu'); default this machine's.
      fallback_side: the square canvas side when neither `canvas` nor a resize rule says.
      onnx: also write `predict.onnx` (the function with the variables inside; its inputs
        are the artifact's but `variables`), through jax2onnx.

    Raises:
      ConfigError: (a ValueError) a bad canvas or batch, an output folder that already
        holds an export (without `overwrite`) or other files, or one that cannot be written;
        with `onnx`, a model jax2onnx cannot convert (Mask R-CNN: the message names the
        primitive) or jax2onnx not installed. Nothing is written then.
    """
    directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    multiple = canvas_multiple(predictor.kind)
    if canvas is None:
        canvas = predictor.canvas or default_canvas(
            predictor.preprocessing, fallback=fallback_side, multiple=multiple
        )
    try:
        canvas = check_canvas(canvas, what="--canvas", multiple=multiple)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    batch_size = predictor.batch_size if batch_size is None else batch_size
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"--batch must be a whole number >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    check_output_folder(directory, overwrite)
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--output {directory}: cannot create {parent} ({e.strerror})") from e

    platforms = tuple(platforms or (jax.default_backend(),))
    specs = predictor.input_specs(canvas=canvas, batch_size=batch_size)
    exported = jax.export.export(jax.jit(predictor.function), platforms=platforms)(*specs)
    names, leaves = _variable_names(predictor.variables)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxseg_version": jaxseg.__version__,
        "jax_version": jax.__version__,
        "task": predictor.kind,
        "model": predictor.source.get("model"),
        "classes": list(predictor.class_names),
        "canvas": list(canvas),
        "batch": batch_size,
        "score_threshold": predictor.score_threshold,
        "mask_threshold": 0.5,
        "preprocessing": _json(predictor.preprocessing),
        "min_size": predictor.min_size,
        "platforms": list(exported.platforms),
        "source": _json(predictor.source),
        "inputs": _INPUTS,
        "outputs": _OUTPUTS[predictor.kind],
        "variables": names,
        "onnx": ONNX_FILE if onnx else None,
    }
    try:
        partial = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.partial-", dir=parent)
    except OSError as e:
        raise ConfigError(f"--output {directory}: cannot write into {parent} ({e.strerror})") from e
    previous = None
    try:
        with open(os.path.join(partial, ARTIFACT_FILE), "wb") as f:
            f.write(exported.serialize())
        np.savez(os.path.join(partial, VARIABLES_FILE), **dict(zip(names, leaves, strict=True)))
        with open(os.path.join(partial, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
        if onnx:
            _write_onnx(predictor, specs, os.path.join(partial, ONNX_FILE))
        if os.path.isdir(directory):
            if os.listdir(directory):  # an export, and overwrite: set aside until replaced
                previous = tempfile.mkdtemp(
                    prefix=f".{os.path.basename(directory)}.previous-", dir=parent
                )
                os.rename(directory, os.path.join(previous, "export"))
            else:
                os.rmdir(directory)
        os.rename(partial, directory)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if previous and not os.path.exists(directory):
            os.rename(os.path.join(previous, "export"), directory)
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        if isinstance(e, OSError):
            raise ConfigError(f"--output {directory}: writing failed ({e.strerror or e})") from e
        raise
    if previous:
        shutil.rmtree(previous, ignore_errors=True)
    return directory


def _write_onnx(predictor: Predictor, specs: Sequence[Any], path: str) -> None:
    """Writes the predictor's function, variables inside, as ONNX (inputs: the artifact's
    but the variables)."""
    function = functools.partial(predictor.function, predictor.variables)
    try:
        write_onnx(function, specs[1:], path, input_names=list(_INPUTS)[1:])
    except (ImportError, OnnxUnsupportedError) as e:
        raise ConfigError(f"--onnx: {e}") from e


def _json(value: Any) -> Any:
    """Returns `value` with tuples as lists and NumPy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
