"""Pictures of semantic segmentations: image | ground truth | prediction, with a legend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["colorize", "palette", "segmentation_panel"]

_IGNORE_COLOUR = (255, 255, 255)
_GAP = 4  # pixels between the three pictures
_SWATCH = 10
_ROW = 14  # legend row height


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
