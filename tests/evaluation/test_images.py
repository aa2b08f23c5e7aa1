"""Predictions on image files: reading, resize rule, semantic and instance outputs, eval.py."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from tiny_workdirs import numpy_variables, save_variables, tiny_fcn_config

from jaxseg.convert import VOC_CATEGORIES, Conversion, save_converted
from jaxseg.evaluation.images import find_images, input_scale, prepare_input, read_images
from jaxseg.evaluation.visualize import draw_instances, segmentation_overlay
from jaxseg.inference.run import predict_images
from jaxseg.models import FCNResNet, MaskRCNN
from jaxseg.tasks import make_task
from jaxseg.testing import TINY_MASK_RCNN_WIDTHS, merge_settings


def _write_images(directory):
    rng = np.random.default_rng(0)
    os.makedirs(directory)
    Image.fromarray(rng.integers(0, 256, (40, 57, 3), dtype=np.uint8)).save(directory / "a.png")
    Image.fromarray(rng.integers(0, 256, (33, 30), dtype=np.uint8)).save(directory / "b.jpg")
    (directory / "notes.txt").write_text("not an image")
    return directory


def test_reading_and_resize_rule(tmp_path):
    folder = _write_images(tmp_path / "pics")
    paths = find_images(str(folder / "*.*g"))
    assert [os.path.basename(p) for p in paths] == ["a.png", "b.jpg"]
    images = read_images(paths)
    assert [image.shape for _, image in images] == [(40, 57, 3), (33, 30, 3)]  # grey -> RGB
    with pytest.raises(ValueError, match="no file matches"):
        find_images(str(folder / "*.gif"))
    with pytest.raises(ValueError, match=r"notes\.txt"):
        read_images([str(folder / "notes.txt")])
    detection = {"resize": "shorter_side", "resize_size": 800, "max_size": 1333}
    assert input_scale((480, 640), detection) == pytest.approx(800 / 480)
    assert input_scale((400, 1200), detection) == pytest.approx(1333 / 1200)
    assert input_scale((480, 640), None) == 1.0
    inputs, inside = prepare_input(images[0][1], scale=0.5, min_size=48)
    assert inputs.shape == (1, 48, 48, 3) and inside == (20, 28)  # 32-multiple, >= 48
    assert not inputs[0, 20:].any() and not inputs[0, :, 28:].any()  # zero (mean) padding


def test_overlay_and_instance_drawing():
    image = np.full((20, 30, 3), 100, np.uint8)
    prediction = np.zeros((20, 30), np.int32)
    prediction[5:10, 5:10] = 2
    overlay = np.asarray(segmentation_overlay(image, prediction, ["bg", "a", "b"]))
    assert overlay.shape[0] == 20 + 14 * 2 + 4 and overlay.shape[1] >= 30  # legend: 2 classes
    np.testing.assert_array_equal(overlay[0, 0], [100, 100, 100])  # background unpainted
    assert not np.array_equal(overlay[7, 7], [100, 100, 100])
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:8, 2:8] = True
    drawn = np.asarray(
        draw_instances(
            image,
            np.array([[2.0, 2.0, 8.0, 8.0], [10.0, 10.0, 20.0, 15.0]]),
            np.array([1, 2]),
            np.array([0.9, 0.2]),
            ["__background__", "cat", "dog"],
            masks=masks,
            score_threshold=0.5,
        )
    )
    assert drawn.shape == (20, 30, 3)
    assert not np.array_equal(drawn[5, 5], [100, 100, 100])  # mask painted
    np.testing.assert_array_equal(drawn[12:15, 12:19], 100)  # below threshold: not drawn
    with pytest.raises(ValueError, match=r"masks must be \[D, H, W\]"):
        draw_instances(image, np.zeros((1, 4)), [1], [1.0], ["bg", "a"], masks=masks)


def test_semantic_task_writes_overlays_class_maps_and_json(tmp_path):
    config = tiny_fcn_config()
    task = make_task(config)
    variables = numpy_variables(task.model, train=False)
    save_variables(tmp_path / "run", variables)
    folder = _write_images(tmp_path / "pics")
    written = predict_images(config, str(tmp_path / "run"), str(folder / "*g"))
    out = tmp_path / "run" / "images"
    assert sorted(os.listdir(out)) == [
        "000_a.png",
        "000_a_classes.png",
        "001_b.png",
        "001_b_classes.png",
        "predictions.json",
    ]
    assert len(written) == 5
    with open(out / "predictions.json") as f:
        records = json.load(f)["images"]
    assert [r["size"] for r in records] == [[40, 57], [33, 30]]
    assert sum(records[0]["class_fractions"].values()) == pytest.approx(1.0, abs=1e-4)
    assert set(records[0]["class_fractions"]) <= set(task.class_names)
    classes = np.asarray(Image.open(out / "000_a_classes.png"))
    assert classes.shape == (40, 57) and classes.max() < task.num_classes
    assert Image.open(out / "000_a.png").size[1] > 40  # the legend below the image


def _save_small(directory, conversion, **resize):
    """Writes `conversion` as `python -m jaxseg.convert` does, with a smaller resize rule."""
    save_converted(directory, conversion)
    path = directory / "jaxseg_convert.json"
    metadata = json.loads(path.read_text())
    metadata["preprocessing"].update(resize)
    path.write_text(json.dumps(metadata))


def test_converted_fcn_folder_needs_no_config(tmp_path):
    model = FCNResNet(depth=50, width=0.125, num_classes=21)
    conversion = Conversion(
        "fcn_resnet50", model, {"width": 0.125, "num_classes": 21}, numpy_variables(model), {}, ()
    )
    _save_small(tmp_path / "converted", conversion, resize_size=48)  # torchvision's: 520
    folder = _write_images(tmp_path / "pics")
    predict_images(None, str(tmp_path / "converted"), str(folder / "b.jpg"))
    out = tmp_path / "converted" / "images"
    with open(out / "predictions.json") as f:
        (record,) = json.load(f)["images"]
    assert record["size"] == [33, 30]
    assert set(record["class_fractions"]) <= set(VOC_CATEGORIES)
    assert np.asarray(Image.open(out / "000_b_classes.png")).shape == (33, 30)


def test_converted_mask_rcnn_folder_needs_no_config(tmp_path):
    # The tiny widths on ResNet-50 (the converted arch's depth), 90 classes as COCO's.
    settings = merge_settings(
        TINY_MASK_RCNN_WIDTHS,
        {
            "num_classes": 90,
            "rpn": {"pre_nms_top_n_test": 50, "post_nms_top_n_test": 20},
            "roi_heads": {"score_threshold": 0.0, "detections_per_image": 5},
        },
    )
    model = MaskRCNN(depth=50, **settings)
    variables = numpy_variables(model, train=False)
    conversion = Conversion("maskrcnn_resnet50_fpn", model, settings, variables, {}, ())
    # torchvision's rule (shorter side 800, longer at most 1333) at a CPU-test size.
    _save_small(tmp_path / "converted", conversion, resize_size=64, max_size=80)
    folder = _write_images(tmp_path / "pics")
    predict_images(
        None,
        str(tmp_path / "converted"),
        str(folder / "a.png"),
        output=str(tmp_path / "out"),
        score_threshold=0.0,
    )
    with open(tmp_path / "out" / "predictions.json") as f:
        (record,) = json.load(f)["images"]
    assert record["overlay"] == "000_a.png" and record["size"] == [40, 57]
    detections = record["detections"]
    assert 1 <= len(detections) <= 5
    for d in detections:
        assert 1 <= d["class"] <= 90 and d["name"] != "__background__"
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 57 + 1e-3 and 0 <= y1 <= y2 <= 40 + 1e-3
    assert Image.open(tmp_path / "out" / "000_a.png").size == (57, 40)
    with pytest.raises(ValueError, match="give --config"):
        predict_images(None, str(tmp_path / "pics"), str(folder / "a.png"))
