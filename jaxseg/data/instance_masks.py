"""Resampling instance masks through the pipeline's resize / crop / flip, without ever
resizing a full-resolution mask.

The pipeline's geometry is an axis-aligned affine map from original pixels to canvas
pixels, `x_canvas = ax * x + bx`, `y_canvas = ay * y + by` (ax < 0 after a flip).
Masks are sampled straight from the original [N, H, W] masks through its inverse.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AxisAffine:
    """x_canvas = ax * x + bx, y_canvas = ay * y + by (coordinates, pixel-edge convention)."""

    ax: float
    bx: float
    ay: float
    by: float

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Returns float32 [N, 4] xyxy canvas boxes of original boxes [N, 4] xyxy."""
        xs = boxes[:, [0, 2]] * self.ax + self.bx
        ys = boxes[:, [1, 3]] * self.ay + self.by
        return np.stack(
            [xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)], axis=1
        ).astype(np.float32)


def crop_masks(
    masks: np.ndarray, boxes: np.ndarray, affine: AxisAffine, mask_size: int
) -> np.ndarray:
    """Returns uint8 [N, M, M] 0/1: each mask cut to its canvas box and resampled to M x M.

    Cell (i, j) of instance n is the original mask, bilinearly interpolated at the canvas
    point (x1 + (j + 0.5) (x2 - x1) / M, y1 + (i + 0.5) (y2 - y1) / M) mapped back through
    `affine`, thresholded at 0.5. This is RoIAlign of the mask on its own box with one
    sample per cell; a Mask R-CNN target for a proposal box is obtained by resampling this
    crop (the mask is 0 outside its box).

    Args:
      masks: uint8 [N, H, W] 0/1, original resolution.
      boxes: float32 [N, 4] xyxy canvas boxes of the instances.
      affine: original -> canvas map.
      mask_size: M.
    """
    num, height, width = masks.shape
    if num == 0:
        return np.zeros((0, mask_size, mask_size), np.uint8)
    cells = (np.arange(mask_size, dtype=np.float64) + 0.5) / mask_size  # [M]
    xs = boxes[:, 0:1] + cells[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # [N, M] canvas
    ys = boxes[:, 1:2] + cells[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    # Back to original pixel-index coordinates (pixel centres at integers).
    xs = (xs - affine.bx) / affine.ax - 0.5
    ys = (ys - affine.by) / affine.ay - 0.5
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    wx = (xs - x0)[:, None, :]  # [N, 1, M]
    wy = (ys - y0)[:, :, None]  # [N, M, 1]
    n = np.arange(num)[:, None, None]

    def tap(yi, xi):
        inside = ((yi >= 0) & (yi < height))[:, :, None] & ((xi >= 0) & (xi < width))[:, None, :]
        values = masks[
            n, np.clip(yi, 0, height - 1)[:, :, None], np.clip(xi, 0, width - 1)[:, None, :]
        ]
        return np.where(inside, values, 0).astype(np.float32)

    value = (
        tap(y0, x0) * (1 - wy) * (1 - wx)
        + tap(y0, x0 + 1) * (1 - wy) * wx
        + tap(y0 + 1, x0) * wy * (1 - wx)
        + tap(y0 + 1, x0 + 1) * wy * wx
    )
    return (value >= 0.5).astype(np.uint8)


def warp_masks(masks: np.ndarray, affine: AxisAffine, size: tuple[int, int]) -> np.ndarray:
    """Returns uint8 [N, H_c, W_c]: masks [N, H, W] carried onto the canvas (nearest).

    Canvas pixels that map outside the original image (padding, cropped-away parts) are 0.
    """
    num, height, width = masks.shape
    ys = np.floor((np.arange(size[0]) + 0.5 - affine.by) / affine.ay).astype(np.int64)
    xs = np.floor((np.arange(size[1]) + 0.5 - affine.bx) / affine.ax).astype(np.int64)
    inside = ((ys >= 0) & (ys < height))[:, None] & ((xs >= 0) & (xs < width))[None, :]
    out = masks[:, np.clip(ys, 0, height - 1)[:, None], np.clip(xs, 0, width - 1)[None, :]]
    return np.where(inside[None], out, 0).astype(np.uint8).reshape(num, *size)
