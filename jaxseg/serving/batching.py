"""`predict_in_batches`: images of any sizes through a function compiled per canvas."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.serving.canvas import check_images, pack, place
from jaxseg.serving.results import instance_result, semantic_result

__all__ = ["predict_in_batches"]

KINDS = ("semantic", "instance")


def predict_in_batches(
    images: Sequence[np.ndarray],
    run: Callable[[dict[str, np.ndarray], float, tuple[int, int]], dict[str, np.ndarray]],
    *,
    kind: str,
    preprocessing: Mapping[str, Any] | None,
    canvas: tuple[int, int] | None,
    batch_size: int,
    score_threshold: float,
    min_size: int = 1,
    rle: bool = False,
) -> list[dict[str, Any]]:
    """Returns one result per image, in order, in the image's own pixels.

    Args:
      images: uint8 [H, W, 3] RGB images, any sizes.
      run: `(pack(...)'s inputs, score_threshold, network canvas) -> outputs` (host arrays)
        of a batch: the compiled function of a `jaxseg.predict.Predictor` or of a loaded
        export.
      kind: 'semantic' (class maps) or 'instance' (detections).
      preprocessing: the resize rule (`jaxseg.serving.input_scale`).
      canvas: a fixed (H, W), or None: per image, the smallest that holds it (one compile
        per distinct canvas).
      batch_size: images per call; a short last batch per canvas is padded with empty slots.
      score_threshold: instances below it are dropped (inside `run`).
      min_size: the smallest canvas side when `canvas` is None.
      rle: add COCO RLE masks to instance results.

    Returns:
      Per image, `jaxseg.serving.semantic_result` or `instance_result`'s dict.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = check_images(images)
    placements = [
        place(image.shape[:2], preprocessing, canvas=canvas, min_size=min_size) for image in images
    ]
    groups: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
    for i, placement in enumerate(placements):
        groups.setdefault((placement.input_canvas, placement.canvas), []).append(i)
    results: list[dict[str, Any] | None] = [None] * len(images)
    for (input_canvas, network_canvas), indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            inputs = pack(
                [images[i] for i in chunk],
                [placements[i] for i in chunk],
                canvas=input_canvas,
                batch_size=batch_size,
            )
            outputs = run(inputs, float(score_threshold), network_canvas)
            for slot, i in enumerate(chunk):
                if kind == "semantic":
                    results[i] = semantic_result(outputs, slot, placements[i])
                else:
                    results[i] = instance_result(outputs, slot, placements[i], rle=rle)
    return results
