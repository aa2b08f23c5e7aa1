"""NumPy image, label, box and mask transforms used by the input pipelines.

All functions are per-example and pure: they take arrays and return new ones. Images are
uint8 [H, W, 3] until `normalize`; label maps uint8 [H, W]; boxes float32 [N, 4] xyxy in
absolute pixels (pixel-edge convention: pixel (i, j) covers [j, j+1) x [i, i+1)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Padding the uint8 image with the mean colour makes the padding exactly 0 once normalised.
_MEAN_PIXEL = tuple(round(float(v)) for v in IMAGENET_MEAN * 255)


def canvas_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Returns (H, W) from an int side or an (H, W) pair; ValueError if not positive."""
    if isinstance(image_size, int | np.integer):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be an int or (H, W) of positive ints, got {image_size}")
    return size


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Returns uint8 image [H, W, 3] resized bilinearly (antialiased) to size (h, w)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Returns uint8 label map [H, W] resized with nearest neighbour to size (h, w)."""
    if label.shape[:2] == tuple(size):
        return label
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST))


def pad_to(array: np.ndarray, size: tuple[int, int], value) -> np.ndarray:
    """Returns `array` [H, W, ...] padded at the bottom and right to size (h, w) with `value`.

    ValueError if `array` is larger than `size`.
    """
    h, w = array.shape[:2]
    if h > size[0] or w > size[1]:
        raise ValueError(f"cannot pad array of shape {array.shape} to {size}: it is larger")
    if (h, w) == tuple(size):
        return array
    out = np.empty((size[0], size[1], *array.shape[2:]), array.dtype)
    out[...] = value
    out[:h, :w] = array
    return out


def pad_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Returns uint8 image padded to size (h, w) with the mean colour (0 after `normalize`)."""
    return pad_to(image, size, np.array(_MEAN_PIXEL, np.uint8))


def normalize(image: np.ndarray) -> np.ndarray:
    """Returns float32 [H, W, 3] (image / 255 - ImageNet mean) / ImageNet std."""
    scale = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
    offset = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
    out = image.astype(np.float32)
    out *= scale
    out -= offset
    return out


def normalize_and_pad(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Returns float32 [h, w, 3]: `normalize(pad_image(image, size))`, computed faster.

    Only the image region is normalised; the padding is written as 0 directly.
    """
    h, w = image.shape[:2]
    if h > size[0] or w > size[1]:
        raise ValueError(f"cannot pad image of shape {image.shape} to {size}: it is larger")
    out = np.zeros((size[0], size[1], 3), np.float32)
    out[:h, :w] = normalize(image)
    return out


def denormalize(image: np.ndarray) -> np.ndarray:
    """Returns uint8 [..., 3]: the inverse of `normalize`, for visualisation."""
    rgb = (np.asarray(image, np.float32) * IMAGENET_STD + IMAGENET_MEAN) * 255.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def random_crop_origin(
    rng: np.random.Generator, size: tuple[int, int], crop: tuple[int, int]
) -> tuple[int, int]:
    """Returns the top-left (y0, x0) of a uniformly random crop of `crop` inside `size`."""
    y0 = int(rng.integers(0, max(size[0] - crop[0], 0) + 1))
    x0 = int(rng.integers(0, max(size[1] - crop[1], 0) + 1))
    return y0, x0


def area(boxes: np.ndarray) -> np.ndarray:
    """Returns float32 [N] areas of boxes [N, 4] xyxy (0 for inverted boxes)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def clip_boxes(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Returns boxes [N, 4] xyxy clipped to an image of size (h, w)."""
    upper = np.array([size[1], size[0], size[1], size[0]], np.float32)
    return np.clip(boxes, 0, upper).astype(np.float32)
