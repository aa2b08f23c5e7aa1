"""Mask-head targets against torchvision's `project_masks_on_boxes` (adaptive sampling)."""

import math

import jax
import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from jaxseg import ops
from jaxseg.data.instance_masks import AxisAffine, crop_masks
from jaxseg.detection import mask_targets


def ellipses(size=96):
    yy, xx = np.mgrid[:size, :size] + 0.5
    first = ((xx - 35) / 25) ** 2 + ((yy - 30) / 14) ** 2 <= 1
    second = ((xx - 62) / 22) ** 2 + ((yy - 66) / 26) ** 2 <= 1
    return np.stack([first, second]).astype(np.uint8)


BOXES = np.array([[10, 16, 60, 44], [40, 40, 84, 92]], np.float32)
ROIS = np.array(
    [
        [10, 16, 60, 44],
        [6, 12, 64, 50],
        [16, 18, 66, 40],
        [40, 40, 84, 92],
        [34, 30, 90, 96],
        [0, 0, 96, 96],  # the whole canvas: the largest grid, ceil(96 / 28) = 4
    ],
    np.float32,
)
MATCHED = np.array([0, 0, 0, 1, 1, 1])


def reference():
    return project_masks_on_boxes(
        torch.from_numpy(ellipses()).float(),
        torch.from_numpy(ROIS),
        torch.from_numpy(MATCHED),
        28,
    ).numpy()


def test_canvas_targets_are_project_masks_on_boxes():
    # RoIHeads' setting: adaptive sampling, capped at ceil(max(image size) / 28), so every
    # RoI inside the image is exact.
    cap = math.ceil(96 / 28)
    assert np.asarray(ops.adaptive_sampling_grid(ROIS, 28)).max() == cap
    out = jax.jit(
        lambda m, r: mask_targets(
            m, BOXES, r, MATCHED, mask_format="canvas", max_sampling_ratio=cap
        )
    )(ellipses(), ROIS)
    np.testing.assert_allclose(out, reference(), rtol=1e-5, atol=1e-5)
    # The fixed ratio 2 the heads used before is not torchvision's on these RoIs.
    fixed = mask_targets(ellipses(), BOXES, ROIS, MATCHED, mask_format="canvas", sampling_ratio=2)
    assert np.abs(np.asarray(fixed) - reference()).max() > 0.05


@pytest.mark.parametrize("crop_size", [56, 112])
def test_crop_targets_approximate_project_masks_on_boxes(crop_size):
    # Crop targets follow each RoI's adaptive grid in input pixels, as torchvision does on the
    # canvas; they differ from it only by the crop's resampling of the mask (0/1 at M x M).
    crops = crop_masks(ellipses(), BOXES, AxisAffine(1.0, 0.0, 1.0, 0.0), crop_size)
    ref = reference()
    out = mask_targets(crops, BOXES, ROIS, MATCHED, mask_format="crop", max_sampling_ratio=4)
    out = np.asarray(out)
    assert np.abs(out - ref).mean() < 0.01
    assert ((out >= 0.5) == (ref >= 0.5)).mean() > 0.985
