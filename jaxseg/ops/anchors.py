"""Anchor boxes for region proposal networks, in torchvision's `AnchorGenerator` order.

Anchors depend only on static shapes, so they are computed with NumPy at trace time and
enter a jitted function as constants.
"""

from collections.abc import Sequence

import numpy as np


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """Returns [A, 4] float32 anchors centred on (0, 0), A = len(aspect_ratios) * len(sizes).

    Ratio-major order; an anchor of size s and ratio r (height / width) has width
    s / sqrt(r), height s * sqrt(r), and corners rounded to integers (half to even).
    """
    if not sizes or not aspect_ratios:
        raise ValueError(f"sizes and aspect_ratios must be non-empty, got {sizes}, {aspect_ratios}")
    if min(sizes) <= 0 or min(aspect_ratios) <= 0:
        raise ValueError(f"sizes and aspect_ratios must be > 0, got {sizes}, {aspect_ratios}")
    scales = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))


def level_anchors(
    feature_size: tuple[int, int],
    stride: tuple[int, int],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
) -> np.ndarray:
    """Returns [H * W * A, 4] float32 anchors xyxy of one level, position-major.

    Args:
      feature_size: (H, W) of the level's feature map.
      stride: (stride_y, stride_x) input pixels per feature pixel.
      sizes, aspect_ratios: as in `cell_anchors`.

    Anchor a at feature pixel (y, x) is row `(y * W + x) * A + a`, its centre at
    (x * stride_x, y * stride_y), as torchvision places it (no half-pixel offset).
    """
    height, width = feature_size
    base = cell_anchors(sizes, aspect_ratios)  # [A, 4]
    shift_x = np.arange(width, dtype=np.int32) * stride[1]
    shift_y = np.arange(height, dtype=np.int32) * stride[0]
    sy, sx = np.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4).astype(np.float32)
    return (shifts + base[None]).reshape(-1, 4)


def generate_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    *,
    sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
    aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
) -> list[np.ndarray]:
    """Returns one [H_l * W_l * A_l, 4] float32 array of anchors per level.

    Args:
      feature_sizes: (H_l, W_l) of each level, finest first.
      image_size: (height, width) of the (padded) network input.
      sizes: anchor sizes per level; torchvision's Mask R-CNN default is one per level.
      aspect_ratios: per level, or a single entry shared by all levels.

    Strides are `image_size // feature_size` per axis, as torchvision computes them.
    """
    if len(aspect_ratios) == 1:
        aspect_ratios = tuple(aspect_ratios) * len(feature_sizes)
    if not len(sizes) == len(aspect_ratios) == len(feature_sizes):
        raise ValueError(
            f"need sizes and aspect_ratios for each of the {len(feature_sizes)} levels, got "
            f"{len(sizes)} and {len(aspect_ratios)}"
        )
    anchors = []
    for (h, w), level_sizes, ratios in zip(feature_sizes, sizes, aspect_ratios, strict=True):
        if h < 1 or w < 1:
            raise ValueError(f"feature sizes must be positive, got {feature_sizes}")
        stride = (image_size[0] // h, image_size[1] // w)
        anchors.append(level_anchors((h, w), stride, level_sizes, ratios))
    return anchors
