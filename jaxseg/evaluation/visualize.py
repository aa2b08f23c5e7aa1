"""Pictures: semantic panels (image | ground truth | prediction), overlays, instances.

- `segmentation_panel`: evaluation pictures of a semantic model, with a class legend;
- `segmentation_overlay`: one image with its predicted classes blended in, and a legend;
- `draw_instances`: one image with instance masks, boxes, class names and scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "colorize",
    "draw_instances",
    "instance_colours",
    "palette",
    "segmentation_overlay",
    "segmentation_panel",
]

_IGNORE_COLOUR = (255, 255, 255)
_GAP = 4  # pixels between the three pictures
_SWATCH = 10
_ROW = 14  # legend row height
# Blending works on bands of this many rows: float32 copies of a whole 24 Mpx photo would
# cost 290 MB each.
_BAND = 256


def palette(num_classes: int) -> np.ndarray:
    """Returns uint8 [K, 3] class colours: the PASCAL VOC colour map (0 is black)."""
    colours = np.zeros((num_classes, 3), np.uint8)
    for k in range(num_classes):
        c, r, g, b = k, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[k] = (r, g, b)
    return colours


def colorize(label: np.ndarray, num_classes: int, *, ignore_label: int = 255) -> np.ndarray:
    """Returns uint8 [H, W, 3] colours of a label map [H, W] (ignored pixels white)."""
    label = np.asarray(label)
    colours = palette(num_classes)
    known = (label >= 0) & (label < num_classes)
    rgb = colours[np.where(known, label, 0)]
    rgb[~known] = _IGNORE_COLOUR if ignore_label is not None else 0
    return rgb


def segmentation_panel(
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    *,
    scale: int = 1,
) -> Image.Image:
    """Returns a PIL image: `image | ground truth | prediction` above a class-colour legend.

    Args:
      image: uint8 [H, W, 3] RGB.
      label: [H, W] ground-truth class ids (255 = ignore, drawn white).
      prediction: [H, W] predicted class ids.
      class_names: the K class names, index = class id.
      scale: integer magnification (nearest neighbour), for small images.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"segmentation_panel: image must be [H, W, 3], got {image.shape}")
    if np.shape(label) != image.shape[:2] or np.shape(prediction) != image.shape[:2]:
        raise ValueError(
            "segmentation_panel: label and prediction must be [H, W] like the image "
            f"{image.shape[:2]}, got {np.shape(label)} and {np.shape(prediction)}"
        )
    num_classes = len(class_names)
    tiles = [image, colorize(label, num_classes), colorize(prediction, num_classes)]
    height, width = image.shape[0] * scale, image.shape[1] * scale
    legend_height = _ROW * (len(class_names) + 1) + 4
    canvas = Image.new("RGB", (3 * width + 2 * _GAP, height + legend_height), (255, 255, 255))
    for i, tile in enumerate(tiles):
        picture = Image.fromarray(tile).resize((width, height), Image.NEAREST)
        canvas.paste(picture, (i * (width + _GAP), 0))
    draw = ImageDraw.Draw(canvas)
    titles = ("image", "ground truth", "prediction")
    y = height + 2
    for i, title in enumerate(titles):
        draw.text((i * (width + _GAP) + 2, y), title, fill=(0, 0, 0))
    colours = palette(num_classes)
    for k, name in enumerate(class_names):
        y = height + 2 + _ROW * (k + 1)
        draw.rectangle(
            [2, y, 2 + _SWATCH, y + _SWATCH],
            fill=tuple(int(c) for c in colours[k]),
            outline=(0, 0, 0),
        )
        draw.text((2 + _SWATCH + 4, y - 1), f"{k} {name}", fill=(0, 0, 0))
    return canvas


def _legend(draw: ImageDraw.ImageDraw, top: int, entries: Sequence[tuple[str, np.ndarray]]) -> None:
    for row, (text, colour) in enumerate(entries):
        y = top + 2 + _ROW * row
        draw.rectangle(
            [2, y, 2 + _SWATCH, y + _SWATCH], fill=tuple(int(c) for c in colour), outline=(0, 0, 0)
        )
        draw.text((2 + _SWATCH + 4, y - 1), text, fill=(0, 0, 0))


def segmentation_overlay(
    image: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    *,
    alpha: float = 0.5,
    background: int | None = 0,
) -> Image.Image:
    """Returns a PIL image: `image` with its predicted classes blended in, legend below.

    Args:
      image: uint8 [H, W, 3] RGB.
      prediction: [H, W] class ids 0..K-1.
      class_names: the K class names, index = class id.
      alpha: opacity of the class colours.
      background: a class id left unpainted (the image shows through), or None.

    The legend lists the classes present in `prediction` with their share of the pixels.
    """
    image = np.asarray(image)
    prediction = np.asarray(prediction)
    if image.ndim != 3 or image.shape[-1] != 3 or prediction.shape != image.shape[:2]:
        raise ValueError(
            "segmentation_overlay: need image [H, W, 3] and prediction [H, W], got "
            f"{image.shape} and {prediction.shape}"
        )
    colours = palette(len(class_names))
    blended = np.empty_like(image, np.uint8)
    for top in range(0, image.shape[0], _BAND):
        rows = slice(top, top + _BAND)
        label = prediction[rows]
        painted = label != background if background is not None else np.ones_like(label, bool)
        band = image[rows].astype(np.float32)
        rgb = colorize(label, len(class_names)).astype(np.float32)
        band[painted] = (1 - alpha) * band[painted] + alpha * rgb[painted]
        blended[rows] = np.round(band).astype(np.uint8)
    present, counts = np.unique(prediction, return_counts=True)
    entries = [
        (f"{k} {class_names[k]} {100 * n / prediction.size:.1f}%", colours[k])
        for k, n in zip(present, counts, strict=True)
        if 0 <= k < len(class_names)
    ]
    height, width = image.shape[:2]
    canvas = Image.new("RGB", (max(width, 160), height + _ROW * len(entries) + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    _legend(ImageDraw.Draw(canvas), height, entries)
    return canvas


def instance_colours(count: int) -> np.ndarray:
    """Returns uint8 [count, 3] distinct, saturated colours (golden-angle hues)."""
    hues = (np.arange(count) * 0.381966) % 1.0
    sector = (hues * 6).astype(int)
    f = hues * 6 - sector
    v, p, q, t = np.ones(count), np.zeros(count) + 0.2, 1 - 0.8 * f, 0.2 + 0.8 * f
    rgb = np.select(
        [sector[:, None] == i for i in range(6)],
        [
            np.stack(c, -1)
            for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        ],
    )
    return np.round(255 * rgb).astype(np.uint8)


def draw_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    *,
    masks: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    score_threshold: float = 0.0,
    alpha: float = 0.45,
) -> Image.Image:
    """Returns a PIL image: `image` with instance masks, boxes and 'name score' labels.

    Args:
      image: uint8 [H, W, 3] RGB.
      boxes: [D, 4] xyxy in the image's pixels (e.g. `Detections.boxes[i]` divided by the
        loader's `scale`).
      classes: [D] class ids, 1..K (0 = background / invalid).
      scores: [D] scores in [0, 1].
      class_names: names indexed by class id (index 0 the background), e.g. the
        `DatasetInfo`'s instance names with 'background' in front.
      masks: optional [D, H, W] masks pasted into the image (bool, or probabilities
        thresholded at 0.5), e.g. `paste_detection_masks(..., threshold=0.5)[i]`.
      valid: optional [D] bool (`Detections.valid[i]`); invalid entries are not drawn.
      score_threshold: entries scoring below it are not drawn.
      alpha: opacity of the mask colours.

    Higher-scoring instances are drawn last, on top.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"draw_instances: image must be [H, W, 3], got {image.shape}")
    boxes, classes, scores = np.asarray(boxes), np.asarray(classes), np.asarray(scores)
    count = boxes.shape[0]
    if boxes.shape != (count, 4) or classes.shape != (count,) or scores.shape != (count,):
        raise ValueError(
            "draw_instances: need boxes [D, 4], classes [D], scores [D], got "
            f"{boxes.shape}, {classes.shape}, {scores.shape}"
        )
    if masks is not None and np.shape(masks) != (count, *image.shape[:2]):
        raise ValueError(
            f"draw_instances: masks must be [D, H, W] = {(count, *image.shape[:2])}, got "
            f"{np.shape(masks)}"
        )
    shown = scores >= score_threshold
    if valid is not None:
        shown &= np.asarray(valid, bool)
    order = [i for i in np.argsort(scores, kind="stable") if shown[i]]  # best drawn last
    colours = instance_colours(count)
    blended = np.array(image, np.uint8)
    if masks is not None and order:
        masks = np.asarray(masks)
        for top in range(0, image.shape[0], _BAND):
            rows = slice(top, top + _BAND)
            band = image[rows].astype(np.float32)
            for i in order:
                inside = masks[i, rows] >= 0.5 if masks.dtype != bool else masks[i, rows]
                band[inside] = (1 - alpha) * band[inside] + alpha * colours[i]
            blended[rows] = np.round(band).astype(np.uint8)
    canvas = Image.fromarray(blended)
    draw = ImageDraw.Draw(canvas)
    for i in order:
        colour = tuple(int(c) for c in colours[i])
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=2)
        k = int(classes[i])
        name = class_names[k] if 0 <= k < len(class_names) else str(k)
        text = f"{name} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        y = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, y, x1 + right - left + 2, y + bottom - top + 2], fill=colour)
        draw.text((x1 + 1, y), text, fill=(0, 0, 0))
    return canvas
