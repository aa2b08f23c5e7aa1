"""Predictions on arbitrary image files (`eval.py --images`): reading, per-image writing.

`eval.py --images` (`jaxseg.inference.predict_images`) reads the images as `(name, uint8
[H, W, 3])` pairs (`ImageFiles`, decoded one at a time), predicts each with a
`jaxseg.predict.Predictor` and writes, per image, an overlay PNG and its entry in one
`predictions.json` (`write_semantic_image`, `write_instance_image`). This module holds the
parts any task shares:

- `find_images(pattern)`: a glob, a file or a directory to file paths;
- `ImageFiles(paths)`: the images, decoded as they are used; a file that is not a readable
  image is skipped, logged with the reason and listed in `predictions.json`;
- `input_scale` (`jaxseg.serving`'s), `prepare_input`: the resize rule (a converted model's
  `preprocessing`, and a cap on the longer side, `max_side`), ImageNet normalisation, zero
  padding to a multiple of 32;
- `write_semantic_image`, `write_instance_image`: one image's files and JSON entry (class
  maps with a legend and class shares; detections drawn, boxes / classes / scores);
- `semantic_image_predictions(predict, ...)`, `instance_image_predictions(detect, ...)`: the
  same for any predict function of one network input (for a task's own loop).

Memory: only one image is decoded at a time, and the network sees at most `max_side`
pixels on its longer side (`eval.py --max_size`, 1333 by default), so its activations are
bounded whatever the file; the predictions are mapped back to the image's own pixels.
Files whose header claims more than PIL's decompression-bomb limit (`MAX_PIXELS`, about
89 Mpx) are refused before decoding. Each distinct padded input size compiles the model
once.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from jaxseg import compiler_options
from jaxseg.data.image_io import MAX_PIXELS, BadImageError, open_image, to_rgb8
from jaxseg.data.transforms import normalize_and_pad
from jaxseg.detection.postprocess import paste_detection_masks
from jaxseg.evaluation.visualize import draw_instances, segmentation_overlay
from jaxseg.serving.canvas import SIZE_DIVISIBLE, input_scale

__all__ = [
    "DEFAULT_MAX_SIZE",
    "PREDICTIONS_FILE",
    "ImageFiles",
    "NothingPredictedError",
    "UnreadableImageError",
    "find_images",
    "image_extensions",
    "input_scale",
    "instance_image_predictions",
    "prepare_input",
    "read_image",
    "read_images",
    "semantic_image_predictions",
    "write_instance_image",
    "write_predictions_json",
    "write_semantic_image",
]

PREDICTIONS_FILE = "predictions.json"
# The longer side of the network input (eval.py --max_size): torchvision's detection limit.
# At 1333 x 1000 an FCN-VGG16 needs about 0.4 GB per 64-channel activation; at a photo's
# 6000 x 4000, 6 GB.
DEFAULT_MAX_SIZE = 1333


class UnreadableImageError(ValueError):
    """Raised for a file that is not a readable image; `path` and `reason` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class NothingPredictedError(ValueError):
    """Raised when none of the files given to predict on could be read as an image."""


def image_extensions() -> frozenset[str]:
    """Returns the file extensions PIL can read ('.jpg', '.png', ...), lower case."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def find_images(pattern: str) -> list[str]:
    """Returns the files `pattern` names, sorted: a glob (`~`, `**`), a file or a directory.

    A directory gives every file in it (not below it) with an extension PIL reads; a glob
    gives every file it matches, whatever its extension (a file that is not an image is
    then skipped by `ImageFiles`).

    Raises:
      ValueError: if nothing matches, naming the pattern.
    """
    expanded = os.path.expanduser(pattern)
    if os.path.isdir(expanded):
        extensions = image_extensions()
        paths = sorted(
            os.path.join(expanded, name)
            for name in os.listdir(expanded)
            if os.path.splitext(name)[1].lower() in extensions
            and os.path.isfile(os.path.join(expanded, name))
        )
        if not paths:
            common = ", ".join(e for e in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".webp"))
            raise ValueError(
                f"directory {pattern!r} holds no image file (extensions {common}, ...); "
                "sub-directories are not searched: give a glob such as 'dir/**/*.jpg'"
            )
        return paths
    paths = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
    if not paths:
        if not glob.has_magic(expanded):
            raise ValueError(f"no such file or directory: {pattern!r}")
        raise ValueError(
            f"no file matches {pattern!r} (quote the glob, e.g. --images 'photos/*.jpg', so "
            "that it reaches eval.py unexpanded; or give a directory)"
        )
    return paths


def read_image(path: str) -> np.ndarray:
    """Returns the image file `path` as uint8 [H, W, 3] RGB (grey, alpha, 16-bit converted).

    Raises:
      UnreadableImageError: (a ValueError) naming the file and the reason: it cannot be
        read, is empty, is not an image, claims more than `MAX_PIXELS` pixels (a
        decompression bomb, refused before decoding), or does not decode (truncated).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnreadableImageError(path, f"cannot read the file ({e.strerror or e})") from e
    if not data:
        raise UnreadableImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # PIL warns above MAX_PIXELS: refused below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
    except UnidentifiedImageError as e:
        raise UnreadableImageError(path, "not an image (PIL knows no format like it)") from e
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(path, f"refused as a decompression bomb: {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(path, f"cannot read its header ({e})") from e
    if width * height > MAX_PIXELS:
        raise UnreadableImageError(
            path,
            f"refused as a decompression bomb: {width}x{height} pixels, more than PIL's "
            f"limit of {MAX_PIXELS}",
        )
    try:
        return to_rgb8(open_image(data, name=path))
    except BadImageError as e:
        raise UnreadableImageError(path, f"cannot decode it ({e.__cause__ or e})") from e


def read_images(paths: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Returns `(path, uint8 [H, W, 3] RGB)` per file, all decoded at once.

    Raises:
      UnreadableImageError: (a ValueError) naming the first file that is not a readable
        image (see `read_image`). `ImageFiles` skips such files instead.
    """
    return [(path, read_image(path)) for path in paths]


class ImageFiles(Iterable[tuple[str, np.ndarray]]):
    """The images of `paths` as `(path, uint8 [H, W, 3] RGB)`, decoded one at a time.

    A file `read_image` refuses is skipped: one warning line names it and the reason, and
    it is added to `skipped` (`{'file', 'reason'}` dicts), which the prediction loops
    write into `predictions.json`. Iterating raises `NothingPredictedError` at the end if
    no file could be read, so that nothing is written for an all-bad folder.
    """

    def __init__(self, paths: Sequence[str], *, source: str | None = None):
        self.paths = list(paths)
        self.source = source
        self.skipped: list[dict[str, str]] = []
        self.read = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        self.skipped, self.read = [], 0
        for path in self.paths:
            try:
                image = read_image(path)
            except UnreadableImageError as e:
                logging.warning("skipping %s: %s", e.path, e.reason)
                self.skipped.append({"file": e.path, "reason": e.reason})
                continue
            self.read += 1
            yield path, image
        if not self.read:
            of = f" of {self.source!r}" if self.source else ""
            if len(self.paths) == 1:
                message = f"{self.paths[0]} could not be read as an image (the reason is above)"
            else:
                message = (
                    f"none of the {len(self.paths)} files{of} could be read as an image "
                    "(each is named above with its reason)"
                )
            raise NothingPredictedError(f"nothing predicted: {message}")


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


def write_predictions_json(
    directory: str, records: list[dict[str, Any]], *, skipped: Sequence[dict[str, str]] = ()
) -> str:
    """Writes `{'images': records, 'skipped': skipped}` to `<directory>/predictions.json`.

    Returns its path. `skipped` lists the files that were not readable images, as
    `{'file', 'reason'}` (`ImageFiles.skipped`).
    """
    path = os.path.join(directory, PREDICTIONS_FILE)
    with open(path, "w") as f:
        json.dump({"images": records, "skipped": list(skipped)}, f, indent=2)
    return path


def _skipped(images: Iterable[Any]) -> list[dict[str, str]]:
    return images.skipped if isinstance(images, ImageFiles) else []


def semantic_image_predictions(
    predict: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    images: Iterable[tuple[str, np.ndarray]],
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
      images: `(name, uint8 [H, W, 3])` pairs, e.g. `ImageFiles` (its skipped files are
        listed in the JSON).
      class_names: the K class names.
      directory: created if needed.
      preprocessing: the resize rule and size cap (see `input_scale`); None predicts at
        the image's size.
      min_size: smallest network input side.

    Returns:
      The paths written: per image `NNN_stem.png` (overlay and legend) and
      `NNN_stem_classes.png` (uint8 class ids at the image's size: a prediction made at a
      reduced size is resized back with nearest-neighbour), then the JSON, whose entries
      hold `file`, `size` [h, w], `input_size` [h, w] (the image inside the network input),
      `overlay`, `classes` and `class_fractions` (class name -> share of the pixels).
    """
    os.makedirs(directory, exist_ok=True)
    predict = compiler_options.jit(predict)
    paths, records = [], []
    for index, (name, image) in enumerate(images):
        scale = input_scale(image.shape[:2], preprocessing)
        inputs, (height, width) = prepare_input(image, scale=scale, min_size=min_size)
        prediction = np.asarray(predict(variables, jnp.asarray(inputs)))[0, :height, :width]
        prediction = prediction.astype(np.uint8)
        del inputs
        if prediction.shape != image.shape[:2]:  # back to the image's pixels
            prediction = np.asarray(
                Image.fromarray(prediction).resize((image.shape[1], image.shape[0]), Image.NEAREST)
            )
        written, record = write_semantic_image(
            directory, index, name, image, prediction, class_names, input_size=(height, width)
        )
        records.append(record)
        paths += written
    paths.append(write_predictions_json(directory, records, skipped=_skipped(images)))
    return paths


def instance_image_predictions(
    detect: Callable[[Any, jax.Array], Any],
    variables: Any,
    images: Iterable[tuple[str, np.ndarray]],
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
      images: `(name, uint8 [H, W, 3])` pairs, e.g. `ImageFiles` (its skipped files are
        listed in the JSON).
      class_names: names indexed by class id, index 0 the background.
      directory: created if needed.
      preprocessing: the resize rule and size cap (see `input_scale`); None predicts at
        the image's size.
      min_size: smallest network input side.
      score_threshold: detections below it are neither drawn nor listed.

    Returns:
      The paths written: `NNN_stem.png` per image (masks, boxes, 'name score'), then the
      JSON, whose entries hold `file`, `size` [h, w], `input_size` [h, w] (the image inside
      the network input), `overlay` and `detections`: a list of `{'class', 'name', 'score',
      'box' [x1, y1, x2, y2] in the image's pixels, 'mask_area'}` by descending score.

    Boxes are divided by the resize factor and masks pasted straight into the image's own
    pixels (torchvision's `paste_masks_in_image`), one listed detection at a time: memory
    grows with the listed detections times the image's pixels, not with all D slots.
    """
    os.makedirs(directory, exist_ok=True)
    detect = compiler_options.jit(detect)
    paste = jax.jit(
        lambda detections, scale, size: paste_detection_masks(
            detections, size, scale=scale, threshold=0.5
        )[0, 0],
        static_argnums=2,
    )
    paths, records = [], []
    for index, (name, image) in enumerate(images):
        scale = input_scale(image.shape[:2], preprocessing)
        inputs, inside = prepare_input(image, scale=scale, min_size=min_size)
        detections = jax.device_get(detect(variables, jnp.asarray(inputs)))
        del inputs
        one = jax.tree.map(lambda x: np.asarray(x)[0], detections)
        keep = np.flatnonzero(one.valid & (one.scores >= score_threshold))  # by score
        size = tuple(image.shape[:2])
        masks = np.zeros((len(keep), *size), bool)
        for row, i in enumerate(keep):
            single = jax.tree.map(lambda x, i=i: x[:, i : i + 1], detections)  # [1, 1, ...]
            masks[row] = np.asarray(paste(single, np.asarray([scale], np.float32), size))
        # The network's canvas is padded beyond the image: clip to the image itself.
        boxes = np.clip(one.boxes[keep] / scale, 0, [image.shape[1], image.shape[0]] * 2)
        written, record = write_instance_image(
            directory,
            index,
            name,
            image,
            boxes,
            one.classes[keep],
            one.scores[keep],
            masks,
            class_names,
            input_size=inside,
        )
        records.append(record)
        paths += written
    paths.append(write_predictions_json(directory, records, skipped=_skipped(images)))
    return paths


def write_semantic_image(
    directory: str,
    index: int,
    name: str,
    image: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    *,
    input_size: tuple[int, int],
) -> tuple[list[str], dict[str, Any]]:
    """Writes one image's overlay and class-id PNG; returns `(paths, predictions.json entry)`.

    Args:
      directory: an existing folder.
      index: the image's position (the files are `NNN_stem.png`, `NNN_stem_classes.png`).
      name: the image's file name.
      image: uint8 [H, W, 3].
      prediction: [H, W] class ids at the image's pixels (stored as uint8).
      class_names: the K class names.
      input_size: (h, w) of the image inside the network input.
    """
    prediction = np.asarray(prediction).astype(np.uint8)
    stem = os.path.join(directory, _output_stem(index, name))
    segmentation_overlay(image, prediction, class_names).save(stem + ".png")
    Image.fromarray(prediction).save(stem + "_classes.png")
    counts = np.bincount(prediction.ravel(), minlength=len(class_names))
    record = {
        "file": name,
        "size": list(image.shape[:2]),
        "input_size": [int(v) for v in input_size],
        "overlay": os.path.basename(stem + ".png"),
        "classes": os.path.basename(stem + "_classes.png"),
        "class_fractions": {
            class_names[k]: round(float(counts[k]) / prediction.size, 6)
            for k in np.flatnonzero(counts)
        },
    }
    return [stem + ".png", stem + "_classes.png"], record


def write_instance_image(
    directory: str,
    index: int,
    name: str,
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    class_names: Sequence[str],
    *,
    input_size: tuple[int, int],
) -> tuple[list[str], dict[str, Any]]:
    """Writes one image's drawing of its detections; returns `(paths, predictions.json entry)`.

    Args:
      directory: an existing folder.
      index: the image's position (the file is `NNN_stem.png`).
      name: the image's file name.
      image: uint8 [H, W, 3].
      boxes: [N, 4] xyxy in the image's pixels; classes [N] (1..K); scores [N], best first.
      masks: bool [N, H, W] at the image's pixels.
      class_names: names indexed by class id, index 0 the background.
      input_size: (h, w) of the image inside the network input.
    """
    path = os.path.join(directory, _output_stem(index, name) + ".png")
    draw_instances(image, boxes, classes, scores, class_names, masks=masks).save(path)
    record = {
        "file": name,
        "size": list(image.shape[:2]),
        "input_size": [int(v) for v in input_size],
        "overlay": os.path.basename(path),
        "detections": [
            {
                "class": int(classes[j]),
                "name": _name(class_names, int(classes[j])),
                "score": round(float(scores[j]), 6),
                "box": [round(float(v), 2) for v in boxes[j]],
                "mask_area": int(masks[j].sum()),
            }
            for j in range(len(boxes))
        ],
    }
    return [path], record


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if 0 <= k < len(class_names) else str(k)
