"""Predictor: results in each image's pixels, equal to the per-image path; batching; inputs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pycocotools import mask as mask_util
from tiny_predictors import fcn_predictor, mask_rcnn_predictor, sample_images

from jaxseg.config import ConfigError
from jaxseg.detection.postprocess import paste_detection_masks
from jaxseg.evaluation.images import prepare_input
from jaxseg.predict import Predictor


def _argmax(predictor, image):
    """The class map of the old per-image path: normalise, pad, apply, crop."""
    inputs, (h, w) = prepare_input(image, min_size=predictor.min_size)
    outputs = predictor.model.apply(predictor.variables, jnp.asarray(inputs), train=False)
    return np.asarray(jnp.argmax(outputs, axis=-1))[0, :h, :w]


def test_semantic_results_equal_the_per_image_path_and_batching():
    images = sample_images()
    single = fcn_predictor()([images[0]])[0]
    assert single["classes"].shape == (40, 57) and single["input_size"] == (40, 57)
    # Own size (no resize rule): the model sees exactly the image, normalised and padded.
    np.testing.assert_array_equal(single["classes"], _argmax(fcn_predictor(), images[0]))
    # Three images in batches of two on one canvas: the last batch has an empty slot. (An
    # FCN's outputs near the border depend on the canvas's padding: compare on one canvas.)
    batched = fcn_predictor(canvas=(96, 96), batch_size=2)([*images[:2], images[0]])
    assert [r["classes"].shape for r in batched] == [(40, 57), (70, 50), (40, 57)]
    np.testing.assert_array_equal(batched[0]["classes"], batched[2]["classes"])
    alone = fcn_predictor(canvas=(96, 96))([images[1]])[0]
    assert np.mean(batched[1]["classes"] == alone["classes"]) > 0.999  # float rounding only


def test_resize_rule_canvas_fit_and_larger_images():
    predictor = fcn_predictor(
        preprocessing={"resize": "shorter_side", "resize_size": 64}, canvas=(64, 96)
    )
    small, tall, strip = predictor(sample_images())
    assert small["input_size"] == (64, 91)  # shorter side 40 -> 64
    assert tall["input_size"] == (64, 46)  # 70 x 50 -> 90 x 64 does not fit: shrunk to fit
    assert strip["input_size"] == (64, 21)  # 300 x 100, larger than the canvas
    assert [r["classes"].shape for r in (small, tall, strip)] == [(40, 57), (70, 50), (300, 100)]
    # Nearest-neighbour back to the image: each class-map row of the strip repeats ~4.7 times.
    rows = strip["classes"][:, 10]
    changes = np.flatnonzero(np.diff(rows)) + 1
    assert len(changes) == 0 or np.min(np.diff(np.r_[0, changes])) >= 4


def test_a_free_canvas_keeps_a_large_image_at_the_networks_resolution():
    image = np.random.default_rng(2).integers(0, 256, (150, 240, 3), dtype=np.uint8)
    (result,) = fcn_predictor(preprocessing={"max_side": 64})([image])
    assert result["input_size"] == (40, 64) and result["classes"].shape == (150, 240)
    # The network's class map, resampled nearest to the image: runs of about 150 / 40 rows.
    runs = np.flatnonzero(np.diff(result["classes"][:, 100])) + 1
    assert len(runs) == 0 or np.min(np.diff(np.r_[0, runs])) >= 3


def test_instance_results_equal_the_per_image_path():
    image = sample_images()[0]
    predictor = mask_rcnn_predictor()
    (result,) = predictor([image], rle=True)
    inputs, _ = prepare_input(image, min_size=32)
    detections = jax.device_get(
        predictor.model.apply(predictor.variables, jnp.asarray(inputs), train=False)
    )
    n = int(detections.valid[0].sum())
    assert n >= 1 and len(result["scores"]) == n
    # One jitted program against the model applied op by op: float32 summation order only.
    np.testing.assert_allclose(result["scores"], detections.scores[0, :n], rtol=1e-4)
    np.testing.assert_array_equal(result["classes"], detections.classes[0, :n])
    expected_boxes = np.clip(detections.boxes[0, :n], 0, [57, 40, 57, 40])
    np.testing.assert_allclose(result["boxes"], expected_boxes, atol=1e-3)
    expected = np.asarray(paste_detection_masks(detections, (40, 57), threshold=0.5))[0, :n]
    assert result["masks"].shape == (n, 40, 57) and result["masks"].any()
    np.testing.assert_array_equal(result["masks"], expected)
    decoded = mask_util.decode(
        [{"size": r["size"], "counts": r["counts"].encode()} for r in result["rle"]]
    )
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1).astype(bool), result["masks"])


def test_zero_detections_and_empty_slots():
    images = sample_images()
    predictor = mask_rcnn_predictor(canvas=(64, 96), batch_size=2)
    nothing = predictor(
        [images[0], np.zeros((64, 64, 3), np.uint8), images[2]], score_threshold=1.0, rle=True
    )
    for result, size in zip(nothing, [(40, 57), (64, 64), (300, 100)], strict=True):
        assert result["boxes"].shape == (0, 4) and result["scores"].shape == (0,)
        assert result["masks"].shape == (0, *size) and result["rle"] == []
    some = predictor(images)
    assert all(len(r["scores"]) >= 1 for r in some)
    assert np.all(np.diff(some[2]["scores"]) <= 0)  # best first
    for result, (h, w) in zip(some, [(40, 57), (70, 50), (300, 100)], strict=True):
        assert result["masks"].shape[1:] == (h, w)
        assert np.all(result["boxes"] >= 0)
        assert np.all(result["boxes"][:, [0, 2]] <= w) and np.all(result["boxes"][:, [1, 3]] <= h)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((8, 8, 3), np.uint8), r"got one array .* pass \[image\]"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], r"images\[1\] .* \(8, 8\)"),
        ([np.zeros((8, 8, 3), np.float32)], r"images\[0\] must be uint8 .* float32"),
        ([np.zeros((0, 8, 3), np.uint8)], r"images\[0\]"),
    ],
)
def test_bad_images_are_named(images, message):
    with pytest.raises(ValueError, match=message):
        fcn_predictor()(images)


def test_bad_settings_are_named(tmp_path):
    message = r"canvas = 60x64: .* multiple of 32 for this model \(60 is not; 32 or 64"
    with pytest.raises(ValueError, match=message):
        mask_rcnn_predictor(canvas=(60, 64))
    assert fcn_predictor(canvas=(60, 64)).canvas == (60, 64)  # an FCN takes any size
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        fcn_predictor(batch_size=0)
    with pytest.raises(ValueError, match="score_threshold must be a number"):
        fcn_predictor()([np.zeros((8, 8, 3), np.uint8)], score_threshold="high")
    with pytest.raises(ConfigError, match=r"--workdir .*nowhere: no such directory"):
        Predictor.from_workdir(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"holds no jaxseg_convert.json: give --config"):
        Predictor.from_workdir(tmp_path)


def test_predict_and_export_import_without_torch():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        "import sys; sys.modules['torch'] = sys.modules['torchvision'] = None; "
        "import jaxseg.predict, jaxseg.export.writer; print('imported')"
    )
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-2000:]
