"""Pictures of instance segmentations: ground truth | prediction, masks, boxes and labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["instance_colours", "instance_panel", "overlay_instances"]

_GAP = 4  # pixels between the two pictures
_TITLE = 14  # height of the title row under the pictures
_ALPHA = 0.45  # mask opacity


def instance_colours(count: int) -> np.ndarray:
    """Returns uint8 [count, 3] distinct, saturated colours (hues a golden ratio apart)."""
    hues = (np.arange(count) * 0.618034) % 1.0 * 6  # hue sector 0..6
    x = 1 - np.abs(hues % 2 - 1)
    one, zero = np.ones(count), np.zeros(count)
    sectors = [(one, x, zero), (x, one, zero), (zero, one, x), (zero, x, one), (x, zero, one)]
    sectors.append((one, zero, x))
    rgb = np.stack([np.stack(s, axis=-1) for s in sectors])  # [6, count, 3]
    rgb = rgb[hues.astype(int) % 6, np.arange(count)]  # [count, 3]
    return np.round(40 + 215 * rgb).astype(np.uint8)


def overlay_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray,
    class_names: Sequence[str],
    *,
    scores: np.ndarray | None = None,
    scale: int = 1,
) -> Image.Image:
    """Returns a PIL image of `image` with each instance's mask, box and label drawn over it.

    Args:
      image: uint8 [H, W, 3] RGB.
      boxes: [N, 4] xyxy in the image's pixels.
      classes: [N] 1..K.
      masks: bool [N, H, W].
      class_names: the K object class names (class k is `class_names[k - 1]`).
      scores: optional [N], written after the class name.
      scale: integer magnification (nearest neighbour), for small images.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"overlay_instances: image must be [H, W, 3], got {image.shape}")
    masks = np.asarray(masks, bool).reshape(-1, *image.shape[:2])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    colours = instance_colours(len(classes))
    blended = image.astype(np.float64)
    for mask, colour in zip(masks, colours, strict=True):
        blended[mask] = (1 - _ALPHA) * blended[mask] + _ALPHA * colour
    height, width = image.shape[0] * scale, image.shape[1] * scale
    picture = Image.fromarray(np.round(blended).astype(np.uint8)).resize(
        (width, height), Image.NEAREST
    )
    draw = ImageDraw.Draw(picture)
    for k, (box, cls, colour) in enumerate(zip(boxes, classes, colours, strict=True)):
        x1, y1, x2, y2 = (box * scale).tolist()
        fill = tuple(int(c) for c in colour)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=fill)
        name = class_names[int(cls) - 1] if 1 <= int(cls) <= len(class_names) else str(cls)
        label = name if scores is None else f"{name} {float(scores[k]):.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle([x1, y, x1 + right - left + 2, y + bottom - top + 2], fill=fill)
        draw.text((x1 + 1, y), label, fill=(0, 0, 0))
    return picture


def instance_panel(
    image: np.ndarray,
    ground_truth: tuple[np.ndarray, np.ndarray, np.ndarray],
    prediction: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    class_names: Sequence[str],
    *,
    scale: int = 1,
) -> Image.Image:
    """Returns a PIL image: ground truth | prediction, each drawn over the image.

    Args:
      image: uint8 [H, W, 3] RGB.
      ground_truth: (boxes [N, 4], classes [N], masks bool [N, H, W]).
      prediction: (boxes [D, 4], classes [D], scores [D], masks bool [D, H, W]), the
        detections to draw.
      class_names: the K object class names.
      scale: integer magnification.
    """
    gt_boxes, gt_classes, gt_masks = ground_truth
    boxes, classes, scores, masks = prediction
    left = overlay_instances(image, gt_boxes, gt_classes, gt_masks, class_names, scale=scale)
    right = overlay_instances(image, boxes, classes, masks, class_names, scores=scores, scale=scale)
    width, height = left.size
    canvas = Image.new("RGB", (2 * width + _GAP, height + _TITLE), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (width + _GAP, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, height + 1), "ground truth", fill=(0, 0, 0))
    draw.text((width + _GAP + 2, height + 1), "prediction", fill=(0, 0, 0))
    return canvas
