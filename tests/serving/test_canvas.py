"""Host side of serving: where images go in a canvas, packing, and results back (NumPy)."""

import numpy as np
import pytest

from jaxseg.serving import pack, parse_canvas, place
from jaxseg.serving.results import instance_result, semantic_result


def test_placement_on_a_fixed_and_a_free_canvas():
    detection = {"resize": "shorter_side", "resize_size": 800, "max_size": 1333}
    landscape = place((480, 640), detection, canvas=(800, 1344))
    assert landscape.input_size == (800, 1067) and landscape.shrink == 1
    portrait = place((640, 480), detection, canvas=(800, 1344))
    assert portrait.input_size == (800, 600)  # the rule's 1067 x 800 shrunk to fit
    photo = place((4000, 6000), detection, canvas=(800, 1344))
    assert photo.input_size == (800, 1200) and photo.shrink == 5
    assert photo.content_size == (800, 1200)
    free = place((40, 57), None)
    assert free.canvas == (64, 64) and free.input_size == (40, 57)
    assert place((20, 28), None, min_size=48).canvas == (48, 48)  # prepare_input's rule
    capped = place((150, 240), {"max_side": 64})
    assert capped.canvas == (64, 64) and capped.input_size == (40, 64)
    # A free canvas keeps the content at least as large as the network's image (50 x 80 >=
    # 40 x 64), in an input array of its own.
    assert capped.shrink == 3 and capped.content_size == (50, 80)
    assert capped.input_canvas == (64, 96)
    photo = place((4000, 6000), {"max_side": 1333})
    assert photo.canvas == (896, 1344) and photo.shrink == 4 and photo.input_canvas == (1024, 1504)


def test_pack_pads_the_batch_with_empty_slots():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    placement = place((5, 7), None, canvas=(32, 32))
    inputs = pack([image], [placement], canvas=(32, 32), batch_size=3)
    assert inputs["images"].shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(inputs["images"][0, :5, :7], image)
    assert not inputs["images"][0, 5:].any() and not inputs["images"][1:].any()
    np.testing.assert_array_equal(inputs["sizes"], [[5, 7], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match="3 images for a batch of 2"):
        pack([image] * 3, [placement] * 3, canvas=(32, 32), batch_size=2)


def test_a_shrunk_image_gets_block_means_and_results_repeated_back():
    image = np.zeros((70, 40, 3), np.uint8)
    image[:35] = 200
    placement = place((70, 40), None, canvas=(32, 32))
    assert placement.shrink == 3 and placement.content_size == (24, 14)
    inputs = pack([image], [placement], canvas=(32, 32), batch_size=1)
    assert inputs["images"][0, 10, 0, 0] == 200 and inputs["images"][0, 12, 0, 0] == 0
    assert inputs["images"][0, 11, 0, 0] == round(200 * 2 / 3)  # rows 33, 34 of 33..35
    classes = np.zeros((1, 32, 32), np.int32)
    classes[0, :12, :] = 1
    result = semantic_result({"classes": classes}, 0, placement)
    assert result["classes"].shape == (70, 40)
    assert result["classes"][:36].all() and not result["classes"][36:].any()
    outputs = {
        "boxes": np.asarray([[[1.0, 2.0, 20.0, 30.0], [0, 0, 0, 0]]], np.float32),
        "scores": np.asarray([[0.9, 0.0]], np.float32),
        "classes": np.asarray([[2, 0]], np.int32),
        "keep": np.asarray([[True, False]]),
        "masks": np.ones((1, 2, 32, 32), bool),
    }
    detections = instance_result(outputs, 0, placement)
    np.testing.assert_allclose(detections["boxes"], [[3.0, 6.0, 40.0, 70.0]])  # x3, clipped
    assert detections["masks"].shape == (1, 70, 40) and detections["masks"].all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("800by1344", "give HEIGHTxWIDTH"),
        ("800x", "give HEIGHTxWIDTH"),
        ("-32x64", "give HEIGHTxWIDTH"),
        ("800x1333", r"multiple of 32 for this model \(1333 is not; 1312 or 1344 is\)"),
        ("0x64", "at least 1 pixel"),
    ],
)
def test_malformed_canvases_are_named(text, message):
    with pytest.raises(ValueError, match=rf"--canvas.*{message}"):
        parse_canvas(text, multiple=32)
    assert parse_canvas(" 800X1344") == (800, 1344)
    assert parse_canvas("520x520") == (520, 520)  # any size (semantic models)
