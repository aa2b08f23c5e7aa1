"""Predictions on arbitrary image files (`eval.py --images GLOB`): reading, per-image loop.

A task's `write_image_predictions(variables, images, directory)` gets the images as
`(name, uint8 [H, W, 3])` pairs (`read_images`) and writes, per image, an overlay PNG and
its entry in one `predictions.json`. This module holds the parts any task shares:

- `find_images(pattern)`, `read_images(paths)`: files to RGB arrays;
- `input_scale`, `prepare_input`: the resize rule (a converted model's `preprocessing`, or
  none), ImageNet normalisation, zero padding to a multiple of 32;
- `semantic_image_predictions(predict, ...)`: the loop for semantic models (class-id maps,
  overlays with a legend, class shares in the JSON);
- `instance_image_predictions(detect, ...)`: the loop for instance models (`Detections`
  mapped back to the image, masks pasted, `visualize.draw_instances`, boxes / classes /
  scores in the JSON).

Each distinct padded input size compiles the model once.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxseg.data.image_io import open_image, read_file, to_rgb8
from jaxseg.data.transforms import normalize_and_pad
from jaxseg.detection.postprocess import paste_detection_masks
from jaxseg.evaluation.visualize import draw_instances, segmentation_overlay

__all__ = [
    "PREDICTIONS_FILE",
    "find_images",
    "input_scale",
    "instance_image_predictions",
    "prepare_input",
    "read_images",
    "semantic_image_predictions",
    "write_predictions_json",
]

PREDICTIONS_FILE = "predictions.json"
SIZE_DIVISIBLE = 32  # inputs are zero-padded (after normalisation) to a multiple of this


def find_images(pattern: str) -> list[str]:
    """Returns the files matching the glob `pattern` (`~` and `**` allowed), sorted.

    Raises:
      ValueError: if nothing matches.
    """
    paths = sorted(
        p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p)
    )
    if not paths:
        raise ValueError(f"no image file matches {pattern!r}")
    return paths


def read_images(paths: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Returns `(path, uint8 [H, W, 3] RGB)` per file (grey, alpha, 16-bit converted).

    Raises:
      ValueError: naming a file that is not a readable image.
    """
    return [(path, to_rgb8(open_image(read_file(path), name=path))) for path in paths]


def input_scale(size: tuple[int, int], preprocessing: Mapping[str, Any] | None) -> float:
    """Returns the factor an image of `size` (h, w) is resized by before the network.

    `preprocessing` is `jaxseg.convert.preprocessing(arch)`'s dict: the shorter side goes to
    `resize_size`, unless the longer side would then exceed `max_size` (torchvision's
    detection rule; its segmentation rule has no `max_size`). None: 1 (no resize).
    """
    if not preprocessing or preprocessing.get("resize") != "shorter_side":
        return 1.0
    scale = preprocessing["resize_size"] / min(size)
    if preprocessing.get("max_size"):
        scale = min(scale, preprocessing["max_size"] / max(size))
    return float(scale)


def prepare_input(
    image: np.ndarray, *, scale: float = 1.0, min_size: int = 1
) -> tuple[np.ndarray, tuple[int, int]]:
    """Returns `(float32 [1, H', W', 3] network input, (h, w) of the image inside it)`.

    The image is resized by `scale` (bilinear), normalised with the ImageNet mean / std
    and zero-padded at the bottom and right to a multiple of 32, at least `min_size`.
    """
    height, width = image.shape[:2]
    if scale != 1.0:
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    canvas = tuple(
        max(min_size, math.ceil(side / SIZE_DIVISIBLE) * SIZE_DIVISIBLE) for side in (height, width)
    )
    return normalize_and_pad(image, canvas)[None], (height, width)


def _output_stem(index: int, path: str) -> str:
    return f"{index:03d}_{os.path.splitext(os.path.basename(path))[0]}"


def write_predictions_json(directory: str, records: list[dict[str, Any]]) -> str:
    """Writes `{'images': records}` to `<directory>/predictions.json`; returns its path."""
    path = os.path.join(directory, PREDICTIONS_FILE)
    with open(path, "w") as f:
        json.dump({"images": records}, f, indent=2)
    return path


def semantic_image_predictions(
    predict: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    images: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    directory: str,
    *,
    preprocessing: Mapping[str, Any] | None = None,
    min_size: int = 1,
) -> list[str]:
    """Writes each image's class overlay and class-id PNG, and `predictions.json`.

    Args:
      predict: `(variables, images [1, H, W, 3]) -> int32 [1, H, W]` class ids (jitted
        here).
      variables: the model's variables.
      images: `(name, uint8 [H, W, 3])` pairs.
      class_names: the K class names.
      directory: created if needed.
      preprocessing: the resize rule (see `input_scale`); None predicts at the image's size.
      min_size: smallest network input side.

    Returns:
      The paths written: per image `NNN_stem.png` (overlay and legend) and
      `NNN_stem_classes.png` (uint8 class ids at the image's size), then the JSON, whose
      entries hold `file`, `size` [h, w], `overlay`, `classes` and `class_fractions`
      (class name -> share of the pixels).
    """
    os.makedirs(directory, exist_ok=True)
    predict = jax.jit(predict)
    paths, records = [], []
    for index, (name, image) in enumerate(images):
        scale = input_scale(image.shape[:2], preprocessing)
        inputs, (height, width) = prepare_input(image, scale=scale, min_size=min_size)
        prediction = np.asarray(predict(variables, jnp.asarray(inputs)))[0, :height, :width]
        if prediction.shape != image.shape[:2]:  # back to the image's pixels
            prediction = np.asarray(
                Image.fromarray(prediction.astype(np.uint8)).resize(
                    (image.shape[1], image.shape[0]), Image.NEAREST
                )
            )
        stem = os.path.join(directory, _output_stem(index, name))
        segmentation_overlay(image, prediction, class_names).save(stem + ".png")
        Image.fromarray(prediction.astype(np.uint8)).save(stem + "_classes.png")
        present, counts = np.unique(prediction, return_counts=True)
        records.append(
            {
                "file": name,
                "size": list(image.shape[:2]),
                "overlay": os.path.basename(stem + ".png"),
                "classes": os.path.basename(stem + "_classes.png"),
                "class_fractions": {
                    class_names[k]: round(float(n) / prediction.size, 6)
                    for k, n in zip(present, counts, strict=True)
                },
            }
        )
        paths += [stem + ".png", stem + "_classes.png"]
    paths.append(write_predictions_json(directory, records))
    return paths


def instance_image_predictions(
    detect: Callable[[Any, jax.Array], Any],
    variables: Any,
    images: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    directory: str,
    *,
    preprocessing: Mapping[str, Any] | None = None,
    min_size: int = 1,
    score_threshold: float = 0.5,
) -> list[str]:
    """Writes each image's instance drawing and `predictions.json`.

    Args:
      detect: `(variables, images [1, H, W, 3]) -> Detections` (e.g. a `MaskRCNN`'s
        `apply(..., train=False)`; jitted here).
      variables: the model's variables.
      images: `(name, uint8 [H, W, 3])` pairs.
      class_names: names indexed by class id, index 0 the background.
      directory: created if needed.
      preprocessing: the resize rule (see `input_scale`); None predicts at the image's size.
      min_size: smallest network input side.
      score_threshold: detections below it are neither drawn nor listed.

    Returns:
      The paths written: `NNN_stem.png` per image (masks, boxes, 'name score'), then the
      JSON, whose entries hold `file`, `size` [h, w], `overlay` and `detections`: a list of
      `{'class', 'name', 'score', 'box' [x1, y1, x2, y2] in the image's pixels,
      'mask_area'}` by descending score.
    """
    os.makedirs(directory, exist_ok=True)
    detect = jax.jit(detect)
    paste = jax.jit(
        lambda detections, scale, size: paste_detection_masks(
            detections, size, scale=scale, threshold=0.5
        ),
        static_argnums=2,
    )
    paths, records = [], []
    for index, (name, image) in enumerate(images):
        scale = input_scale(image.shape[:2], preprocessing)
        inputs, _ = prepare_input(image, scale=scale, min_size=min_size)
        detections = detect(variables, jnp.asarray(inputs))
        masks = np.asarray(paste(detections, jnp.asarray([scale]), tuple(image.shape[:2])))[0]
        one = jax.tree.map(lambda x: np.asarray(x)[0], detections)
        # The network's canvas is padded beyond the image: clip to the image itself.
        boxes = np.clip(one.boxes / scale, 0, [image.shape[1], image.shape[0]] * 2)
        keep = one.valid & (one.scores >= score_threshold)
        path = os.path.join(directory, _output_stem(index, name) + ".png")
        draw_instances(
            image, boxes, one.classes, one.scores, class_names, masks=masks, valid=keep
        ).save(path)
        records.append(
            {
                "file": name,
                "size": list(image.shape[:2]),
                "overlay": os.path.basename(path),
                "detections": [
                    {
                        "class": int(one.classes[i]),
                        "name": _name(class_names, int(one.classes[i])),
                        "score": round(float(one.scores[i]), 6),
                        "box": [round(float(v), 2) for v in boxes[i]],
                        "mask_area": int(masks[i].sum()),
                    }
                    for i in np.flatnonzero(keep)
                ],
            }
        )
        paths.append(path)
    paths.append(write_predictions_json(directory, records))
    return paths


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if 0 <= k < len(class_names) else str(k)
