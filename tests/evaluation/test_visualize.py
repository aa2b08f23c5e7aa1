"""Pictures: class colours, ignored pixels, the panel's layout."""

import numpy as np
import pytest

from jaxseg.evaluation.visualize import colorize, palette, segmentation_panel


def test_palette_is_the_voc_colour_map():
    colours = palette(21)
    np.testing.assert_array_equal(colours[:4], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    assert len({tuple(c) for c in colours}) == 21


def test_colorize_marks_ignored_pixels_white():
    label = np.array([[0, 1], [255, 2]])
    rgb = colorize(label, 3)
    np.testing.assert_array_equal(rgb[0, 1], [128, 0, 0])
    np.testing.assert_array_equal(rgb[1, 0], [255, 255, 255])


def test_panel_holds_image_ground_truth_and_prediction():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    label = np.zeros((8, 10), np.int32)
    prediction = np.ones((8, 10), np.int32)
    panel = np.asarray(segmentation_panel(image, label, prediction, ["bg", "thing"], scale=2))
    assert panel.shape[1] == 3 * 20 + 2 * 4 and panel.shape[0] > 16  # legend below
    np.testing.assert_array_equal(panel[:16:2, :20:2], image)
    np.testing.assert_array_equal(panel[:16, 24:44], 0)  # ground truth: background black
    np.testing.assert_array_equal(panel[:16, 48:68], np.broadcast_to([128, 0, 0], (16, 20, 3)))


def test_panel_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"label and prediction must be \[H, W\]"):
        segmentation_panel(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)), np.zeros((4, 4)), ["a"])
