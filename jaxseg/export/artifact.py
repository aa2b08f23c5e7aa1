"""`load(DIR)`: an exported predictor, run without jaxseg's models, tasks or Flax.

This module imports only jax, numpy, json, `jaxseg.serving` (NumPy host code) and
`jaxseg.compiler_options` (the CPU kernels jaxseg compiles with), so that a deployment
needs neither the model code nor Flax: the artifact is StableHLO, run by
`jax.export.deserialize(...).call` under `jaxseg.compiler_options.jit`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxseg import compiler_options
from jaxseg.export.layout import (
    ARTIFACT_FILE,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    VARIABLES_FILE,
)
from jaxseg.serving import predict_in_batches

__all__ = ["ExportedPredictor", "load"]


def load(directory: str | os.PathLike) -> ExportedPredictor:
    """Returns the predictor exported into `directory` by `python -m jaxseg.export`.

    Raises:
      ValueError: naming the folder, if it is missing, holds no export (or an incomplete
        one), an export of a newer format, or one made for other platforms than this one.
    """
    return ExportedPredictor(directory)


class ExportedPredictor:
    """A loaded export: called like `jaxseg.predict.Predictor`, with the same results.

        predictor = jaxseg.export.load("exports/maskrcnn")
        results = predictor([image])    # uint8 [H, W, 3] each; results in its own pixels

    The canvas and batch are the export's: every image is resized by the exported rule and
    shrunk to fit the canvas if needed; batches are padded with empty slots.

    Attributes:
      metadata: the export's JSON (classes, canvas, batch, thresholds, source, versions).
      kind, class_names, canvas, batch_size, score_threshold, preprocessing, source.
      exported: the `jax.export.Exported`.
    """

    def __init__(self, directory: str | os.PathLike):
        directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        if not os.path.isdir(directory):
            raise ValueError(f"export folder {directory}: no such directory")
        metadata_path = os.path.join(directory, METADATA_FILE)
        if not os.path.isfile(metadata_path):
            raise ValueError(
                f"export folder {directory} holds no {METADATA_FILE}: not written by "
                "python -m jaxseg.export"
            )
        with open(metadata_path) as f:
            metadata = json.load(f)
        if metadata.get("format") != FORMAT or metadata.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{metadata_path}: format {metadata.get('format')!r} version "
                f"{metadata.get('format_version')!r}; this jaxseg reads {FORMAT!r} up to "
                f"version {FORMAT_VERSION}"
            )
        for name in (ARTIFACT_FILE, VARIABLES_FILE):
            if not os.path.isfile(os.path.join(directory, name)):
                raise ValueError(
                    f"export folder {directory} holds no {name} (an incomplete copy?): export again"
                )
        with open(os.path.join(directory, ARTIFACT_FILE), "rb") as f:
            self.exported = jax.export.deserialize(bytearray(f.read()))
        platform = jax.default_backend()
        if platform not in self.exported.platforms:
            raise ValueError(
                f"export folder {directory} was exported for {list(self.exported.platforms)}, "
                f"not {platform!r}: export again with --platforms {platform}"
            )
        self.directory = directory
        self.metadata = metadata
        self.kind = metadata["task"]
        self.class_names = tuple(metadata["classes"])
        self.canvas = tuple(metadata["canvas"])
        self.batch_size = int(metadata["batch"])
        self.score_threshold = float(metadata["score_threshold"])
        self.preprocessing = dict(metadata["preprocessing"])
        self.min_size = int(metadata.get("min_size", 1))
        self.source = dict(metadata.get("source") or {})
        self._variables = self._read_variables(os.path.join(directory, VARIABLES_FILE))
        self._call = compiler_options.jit(self.exported.call)

    def _read_variables(self, path: str) -> list[Any]:
        """Returns the variables as the artifact's first leaves, checked against its avals."""
        names = self.metadata["variables"]
        with np.load(path, allow_pickle=False) as arrays:
            missing = [name for name in names if name not in arrays.files]
            if missing:
                raise ValueError(f"{path} lacks {len(missing)} arrays, e.g. {missing[0]!r}")
            leaves = [arrays[name] for name in names]
        avals = self.exported.in_avals[: len(leaves)]
        out = []
        for name, leaf, aval in zip(names, leaves, avals, strict=True):
            if leaf.dtype != aval.dtype and leaf.dtype.itemsize == np.dtype(aval.dtype).itemsize:
                leaf = leaf.view(aval.dtype)  # bfloat16 is saved as raw 2-byte values
            if leaf.shape != aval.shape or leaf.dtype != aval.dtype:
                raise ValueError(
                    f"{path}: {name} is {leaf.dtype} {leaf.shape}, the artifact takes "
                    f"{aval.dtype} {aval.shape}"
                )
            out.append(jax.device_put(leaf))
        return out

    def __call__(
        self,
        images: Sequence[np.ndarray],
        *,
        score_threshold: float | None = None,
        rle: bool = False,
    ) -> list[dict[str, Any]]:
        """Returns one result per image, as `jaxseg.predict.Predictor.__call__` does."""
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
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
        self, inputs: dict[str, np.ndarray], threshold: float, canvas: tuple[int, int]
    ) -> dict[str, np.ndarray]:
        del canvas  # the export's own: a fixed canvas packs images into an array of its size
        leaves = [
            *self._variables,
            inputs["images"],
            inputs["sizes"],
            inputs["input_sizes"],
            np.float32(threshold),
        ]
        args, kwargs = self.exported.in_tree.unflatten(leaves)
        outputs = self._call(*args, **kwargs)
        return {k: np.asarray(v) for k, v in jax.device_get(outputs).items()}
