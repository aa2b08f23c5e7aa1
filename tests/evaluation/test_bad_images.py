"""`eval.py --images` on folders with bad files, and on images larger than the size cap."""

import json
import logging
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from image_bytes import jpeg, png_header
from PIL import Image
from tiny_workdirs import numpy_variables, save_variables, tiny_fcn_config

from jaxseg.convert import Conversion, save_converted
from jaxseg.detection.postprocess import paste_detection_masks
from jaxseg.detection.structures import Detections
from jaxseg.evaluation.images import (
    NothingPredictedError,
    find_images,
    input_scale,
    instance_image_predictions,
    semantic_image_predictions,
)
from jaxseg.inference.run import predict_images
from jaxseg.models import FCNResNet
from jaxseg.tasks import make_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The bad files and what their skip reason must say.
BAD_FILES = {
    "empty.png": (b"", "empty file"),
    "fake.jpg": (b"not an image at all", "not an image"),
    "truncated.jpg": (None, "truncated"),  # half of a good JPEG, written below
    "bomb.png": (png_header(50_000, 50_000), "decompression bomb"),
    "too_large.png": (png_header(10_000, 10_000), "decompression bomb"),
}


def _write_folder(folder, *, good=True):
    """Writes good images (40x57 RGB, 33x30 grey, 150x240 RGB) and `BAD_FILES` into folder."""
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    if good:
        Image.fromarray(rng.integers(0, 256, (40, 57, 3), dtype=np.uint8)).save(folder / "a.png")
        Image.fromarray(rng.integers(0, 256, (33, 30), dtype=np.uint8)).save(folder / "b.jpg")
        Image.fromarray(rng.integers(0, 256, (150, 240, 3), dtype=np.uint8)).save(folder / "c.png")
    (folder / "notes.txt").write_text("no image extension: not taken from a directory")
    for name, (data, _) in BAD_FILES.items():
        if data is None:
            data = jpeg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            data = data[: len(data) // 2]
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def fcn_workdir(tmp_path):
    config = tiny_fcn_config()
    save_variables(tmp_path / "run", numpy_variables(make_task(config).model, train=False))
    return config, tmp_path / "run"


def test_bad_files_are_skipped_named_and_counted(fcn_workdir, tmp_path, caplog, capsys):
    config, workdir = fcn_workdir
    folder = _write_folder(tmp_path / "pics")
    with caplog.at_level(logging.WARNING):
        predict_images(config, str(workdir), str(folder), max_size=64)  # a directory
    with open(workdir / "images" / "predictions.json") as f:
        predictions = json.load(f)
    records = predictions["images"]
    assert [os.path.basename(r["file"]) for r in records] == ["a.png", "b.jpg", "c.png"]
    # c.png (150x240) is predicted with its longer side at 64 and mapped back to its pixels.
    assert records[2]["size"] == [150, 240] and records[2]["input_size"] == [40, 64]
    classes = np.asarray(Image.open(workdir / "images" / records[2]["classes"]))
    assert classes.shape == (150, 240)
    assert records[0]["input_size"] == [40, 57]  # below the cap: its own size

    skipped = {os.path.basename(s["file"]): s["reason"] for s in predictions["skipped"]}
    assert set(skipped) == set(BAD_FILES)  # notes.txt: not an image extension, not taken
    for name, (_, reason) in BAD_FILES.items():
        assert reason in skipped[name], (name, skipped[name])
        assert "BytesIO" not in skipped[name]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in BAD_FILES:  # one warning line each, naming the file and the reason
        (line,) = [w for w in warnings if str(folder / name) in w]
        assert skipped[name] in line and "\n" not in line
    out = capsys.readouterr().out
    assert "3 images" in out and "5 skipped" in out


def test_nothing_readable_is_an_error_and_leaves_no_folder(fcn_workdir, tmp_path):
    config, workdir = fcn_workdir
    folder = _write_folder(tmp_path / "pics", good=False)
    with pytest.raises(NothingPredictedError, match=r"none of the 5 files .* could be read"):
        predict_images(config, str(workdir), str(folder / "*.*g"))
    assert not (workdir / "images").exists()
    # An output folder that already existed is kept, and nothing is written into it.
    os.makedirs(tmp_path / "out")
    with pytest.raises(NothingPredictedError):
        predict_images(config, str(workdir), str(folder), output=str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []


def test_finding_images(tmp_path):
    folder = _write_folder(tmp_path / "pics")
    os.makedirs(folder / "sub")
    Image.new("RGB", (8, 8)).save(folder / "sub" / "d.png")  # a directory is not recursed
    names = [os.path.basename(p) for p in find_images(str(folder))]
    assert names == sorted(["a.png", "b.jpg", "c.png", *BAD_FILES])
    assert find_images(str(folder) + "/") == find_images(str(folder))
    assert [os.path.basename(p) for p in find_images(str(folder / "**" / "d.png"))] == ["d.png"]
    with pytest.raises(ValueError, match=r"no file matches '.*\*\.gif'.*quote"):
        find_images(str(folder / "*.gif"))
    with pytest.raises(ValueError, match=r"no such file or directory: '.*missing\.jpg'"):
        find_images(str(folder / "missing.jpg"))
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "readme.md").write_text("")
    with pytest.raises(ValueError, match=r"holds no image file .*\.png"):
        find_images(str(tmp_path / "empty"))


def test_size_cap_in_the_resize_rule():
    assert input_scale((4000, 6000), {"max_side": 1333}) == pytest.approx(1333 / 6000)
    assert input_scale((400, 600), {"max_side": 1333}) == 1.0  # never enlarged
    # torchvision's segmentation rule (shorter side 520, no longer-side limit) gets the cap:
    # a 100 x 2000 panorama would otherwise go in at 520 x 10400.
    fcn = {"resize": "shorter_side", "resize_size": 520, "max_side": 1333}
    assert input_scale((480, 640), fcn) == pytest.approx(520 / 480)
    assert input_scale((100, 2000), fcn) == pytest.approx(1333 / 2000)
    detection = {"resize": "shorter_side", "resize_size": 800, "max_size": 1333, "max_side": 1000}
    assert input_scale((400, 1200), detection) == pytest.approx(1000 / 1200)


def test_capped_semantic_prediction_is_mapped_back_to_the_image(tmp_path):
    seen = []

    def predict(variables, x):  # class 1 on the right half of the network input's image
        seen.append(x.shape)
        return jnp.broadcast_to(jnp.arange(x.shape[2]) >= 32, x.shape[:3]).astype(jnp.int32)

    image = np.zeros((150, 240, 3), np.uint8)
    semantic_image_predictions(
        predict,
        {},
        [("wide.png", image)],
        ["bg", "fg"],
        str(tmp_path),
        preprocessing={"max_side": 64},
    )
    assert seen == [(1, 64, 64, 3)]  # 40 x 64 inside, padded to a multiple of 32
    classes = np.asarray(Image.open(tmp_path / "000_wide_classes.png"))
    assert classes.shape == (150, 240)
    assert not classes[:, :120].any() and classes[:, 120:].all()  # nearest, at the image's pixels


def test_capped_instance_prediction_is_mapped_back_to_the_image(tmp_path):
    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, (1, 3, 28, 28)).astype(np.float32)
    detections = Detections(
        boxes=jnp.asarray(
            [[[8.0, 8.0, 24.0, 16.0], [30.0, 2.0, 60.0, 38.0], [0.0, 0.0, 0.0, 0.0]]]
        ),
        scores=jnp.asarray([[0.9, 0.7, 0.0]]),
        classes=jnp.asarray([[1, 2, 0]]),
        masks=jnp.asarray(masks),
        valid=jnp.asarray([[True, True, False]]),
    )
    seen = []

    def detect(variables, x):
        seen.append(x.shape)
        return detections

    image = np.zeros((150, 240, 3), np.uint8)
    instance_image_predictions(
        detect,
        {},
        [("wide.png", image)],
        ["bg", "cat", "dog"],
        str(tmp_path),
        preprocessing={"max_side": 64},
        score_threshold=0.5,
    )
    assert seen == [(1, 64, 64, 3)]
    with open(tmp_path / "predictions.json") as f:
        (record,) = json.load(f)["images"]
    assert record["size"] == [150, 240] and record["input_size"] == [40, 64]
    scale = 64 / 240
    expected = paste_detection_masks(
        detections, (150, 240), scale=jnp.asarray([scale]), threshold=0.5
    )
    found = record["detections"]
    assert [d["name"] for d in found] == ["cat", "dog"]
    np.testing.assert_allclose(found[0]["box"], [30.0, 30.0, 90.0, 60.0], atol=0.01)
    np.testing.assert_allclose(found[1]["box"], [112.5, 7.5, 225.0, 142.5], atol=0.01)
    assert [d["mask_area"] for d in found] == [int(expected[0, i].sum()) for i in range(2)]
    assert Image.open(tmp_path / "000_wide.png").size == (240, 150)


def test_eval_py_exits_nonzero_when_nothing_could_be_predicted(tmp_path):
    model = FCNResNet(depth=50, width=0.125, num_classes=21)
    conversion = Conversion(
        "fcn_resnet50", model, {"width": 0.125, "num_classes": 21}, numpy_variables(model), {}, ()
    )
    save_converted(tmp_path / "converted", conversion)
    folder = _write_folder(tmp_path / "pics", good=False)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    converted = str(tmp_path / "converted")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "eval.py"),
            "--workdir",
            converted,
            "--images",
            str(folder),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "eval.py: nothing predicted: none of the 5 files" in result.stderr
    for name in BAD_FILES:
        assert str(folder / name) in result.stderr
    assert not (tmp_path / "converted" / "images").exists()
