"""Scalars (and evaluation pictures) to TensorBoard event files (tensorboardX, no
TensorFlow), scalars also to `metrics.jsonl`."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import tensorboardX

__all__ = ["MetricWriter", "flatten_metrics", "json_safe"]


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Returns `{'a/b': float}` for the numbers in nested dicts / lists of `metrics`."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, list | tuple):
            flat.update(flatten_metrics({str(i): v for i, v in enumerate(value)}, name + "/"))
        else:
            flat[name] = float(value)
    return flat


def json_safe(value: Any) -> Any:
    """Returns `value` with NaN / inf floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>`.

    Each JSON line is `{"step": int, "split": "train" | "eval", **metrics}`; TensorBoard
    scalars are named `<split>/<metric>` (nested metrics as `<split>/<metric>/<key>`).
    Only process 0 writes.
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tensorboard = None
        if enabled:
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._tensorboard = tensorboardX.SummaryWriter(workdir)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """Writes `metrics` (floats, nested dicts / lists of floats) at `step`."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps(json_safe({"step": step, "split": split, **metrics})) + "\n")
        self._jsonl.flush()
        for name, value in flatten_metrics(metrics).items():
            if math.isfinite(value):
                self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        self._tensorboard.flush()

    def write_images(self, step: int, images: dict[str, Any]) -> None:
        """Writes uint8 [H, W, 3] pictures as TensorBoard image summaries at `step`."""
        if not self.enabled:
            return
        for name, image in images.items():
            self._tensorboard.add_image(name, image, step, dataformats="HWC")
        self._tensorboard.flush()

    def close(self) -> None:
        """Flushes and closes both outputs."""
        if self.enabled:
            self._jsonl.close()
            self._tensorboard.close()
