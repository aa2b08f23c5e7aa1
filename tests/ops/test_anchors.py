"""Anchors in torchvision's AnchorGenerator order."""

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from jaxseg import ops


def test_cell_anchors_hand_computed():
    # Size 32: ratio 0.5 -> 45.25 x 22.63, ratio 1 -> 32 x 32, ratio 2 -> 22.63 x 45.25; rounded.
    np.testing.assert_array_equal(
        ops.cell_anchors((32,), (0.5, 1.0, 2.0)),
        [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]],
    )


@pytest.mark.parametrize("image_size", [(64, 96), (100, 75), (800, 1088)])
def test_matches_torchvision(image_size):
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    feature_sizes = [(-(-image_size[0] // s), -(-image_size[1] // s)) for s in (4, 8, 16, 32, 64)]
    generator = AnchorGenerator(sizes, ratios)
    images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    maps = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    ref = generator(images, maps)[0].numpy()
    ours = np.concatenate(
        ops.generate_anchors(feature_sizes, image_size, sizes=sizes, aspect_ratios=ratios)
    )
    np.testing.assert_array_equal(ours, ref)


def test_several_sizes_per_level():
    generator = AnchorGenerator(((16, 32),), ((0.5, 1.0),))
    images = ImageList(torch.zeros(1, 3, 40, 40), [(40, 40)])
    ref = generator(images, [torch.zeros(1, 1, 5, 5)])[0].numpy()
    ours = ops.generate_anchors([(5, 5)], (40, 40), sizes=((16, 32),), aspect_ratios=((0.5, 1.0),))
    np.testing.assert_array_equal(ours[0], ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        ops.generate_anchors(
            [(4, 4), (2, 2)], (32, 32), sizes=((32,),), aspect_ratios=((1.0,),) * 2
        )
    with pytest.raises(ValueError, match="> 0"):
        ops.cell_anchors((0,), (1.0,))
