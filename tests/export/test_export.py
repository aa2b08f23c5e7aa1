"""jax.export artifacts: loaded without Flax or the model code, equal to the Predictor."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tiny_predictors import fcn_predictor, mask_rcnn_predictor, sample_images

import jaxseg.export
from jaxseg.config import ConfigError
from jaxseg.export import ARTIFACT_FILE, METADATA_FILE
from jaxseg.export.writer import export_predictor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in a fresh process: loads both exports, predicts, saves the results, and reports
# which modules got imported.
_LOAD = """
import json, sys
import numpy as np
import jaxseg.export

folder = sys.argv[1]
images = list(np.load(folder + "/images.npz").values())
fcn = jaxseg.export.load(folder + "/fcn")
mask_rcnn = jaxseg.export.load(folder + "/mask_rcnn")
out = {}
for i, r in enumerate(fcn(images)):
    out[f"fcn{i}"] = r["classes"]
for i, r in enumerate(mask_rcnn(images)):
    for key in ("boxes", "scores", "classes", "masks"):
        out[f"mask_rcnn{i}_{key}"] = r[key]
nothing = mask_rcnn(images, score_threshold=1.0)
np.savez(folder + "/results.npz", **out)
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("jaxseg", "flax")),
    "nothing": [len(r["scores"]) for r in nothing],
    "nothing_masks": [list(r["masks"].shape) for r in nothing],
}))
"""


def _env():
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([ROOT, path])}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    fcn = fcn_predictor(canvas=(64, 96), batch_size=2)
    mask_rcnn = mask_rcnn_predictor(canvas=(64, 96), batch_size=2)
    export_predictor(fcn, folder / "fcn")
    export_predictor(mask_rcnn, folder / "mask_rcnn")
    return folder, fcn, mask_rcnn


def test_load_needs_no_flax_and_equals_the_predictor(exported):
    folder, fcn, mask_rcnn = exported
    # Three images in batches of two (the second batch padded), one blank, one larger than
    # the canvas (shrunk to fit, results in its own pixels).
    images = [*sample_images(), np.zeros((50, 50, 3), np.uint8)]
    np.savez(folder / "images.npz", *images)
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, str(folder)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    modules = report["modules"]
    assert "jaxseg.export" in modules
    for heavy in ("flax", "jaxseg.models", "jaxseg.tasks", "jaxseg.predict", "jaxseg.detection"):
        assert heavy not in modules, modules
    assert report["nothing"] == [0, 0, 0, 0]
    assert report["nothing_masks"] == [[0, 40, 57], [0, 70, 50], [0, 300, 100], [0, 50, 50]]

    loaded = np.load(folder / "results.npz")
    for i, r in enumerate(fcn(images)):
        np.testing.assert_array_equal(loaded[f"fcn{i}"], r["classes"])
    expected = mask_rcnn(images)
    assert all(len(r["scores"]) >= 1 for r in expected[:3])  # threshold 0: detections
    for i, r in enumerate(expected):
        np.testing.assert_allclose(loaded[f"mask_rcnn{i}_boxes"], r["boxes"], atol=1e-4)
        np.testing.assert_allclose(loaded[f"mask_rcnn{i}_scores"], r["scores"], atol=1e-6)
        np.testing.assert_array_equal(loaded[f"mask_rcnn{i}_classes"], r["classes"])
        np.testing.assert_array_equal(loaded[f"mask_rcnn{i}_masks"], r["masks"])
    assert loaded["mask_rcnn2_masks"].shape[1:] == (300, 100)


def test_metadata_says_what_is_inside(exported):
    folder, _, mask_rcnn = exported
    with open(folder / "mask_rcnn" / METADATA_FILE) as f:
        metadata = json.load(f)
    assert metadata["task"] == "instance" and metadata["classes"] == list(mask_rcnn.class_names)
    assert metadata["canvas"] == [64, 96] and metadata["batch"] == 2
    assert metadata["score_threshold"] == 0.0 and metadata["mask_threshold"] == 0.5
    assert metadata["jaxseg_version"] == jaxseg.__version__ and metadata["platforms"] == ["cpu"]
    assert metadata["source"]["model"] == "mask_rcnn_resnet18_fpn"
    assert len(metadata["variables"]) == len(np.load(folder / "mask_rcnn" / "variables.npz"))


def test_an_interrupted_export_leaves_nothing_and_keeps_the_previous(exported, monkeypatch):
    folder, fcn, _ = exported
    with pytest.raises(ConfigError, match=r"already holds an export: give --overwrite"):
        export_predictor(fcn, folder / "fcn")
    before = (folder / "fcn" / METADATA_FILE).read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("jaxseg.export.writer.np.savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_predictor(fcn, folder / "new")
    with pytest.raises(KeyboardInterrupt):
        export_predictor(fcn, folder / "fcn", overwrite=True, batch_size=1)
    assert not (folder / "new").exists()
    assert not [name for name in os.listdir(folder) if name.startswith(".")]  # no partial
    assert (folder / "fcn" / METADATA_FILE).read_bytes() == before

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("jaxseg.export.writer.np.savez", full)
    with pytest.raises(ConfigError, match=r"--output .*new: writing failed \(No space left"):
        export_predictor(fcn, folder / "new")
    assert not (folder / "new").exists()
    assert not [name for name in os.listdir(folder) if name.startswith(".")]
    monkeypatch.undo()
    export_predictor(fcn, folder / "fcn", overwrite=True, batch_size=1)
    assert jaxseg.export.load(folder / "fcn").batch_size == 1


def test_load_names_what_is_missing(exported, tmp_path):
    folder, _, _ = exported
    with pytest.raises(ValueError, match=r"export folder .*nowhere: no such directory"):
        jaxseg.export.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=rf"holds no {METADATA_FILE}: not written by"):
        jaxseg.export.load(tmp_path)
    shutil.copytree(folder / "mask_rcnn", tmp_path / "copy")
    os.remove(tmp_path / "copy" / ARTIFACT_FILE)
    with pytest.raises(ValueError, match=rf"holds no {ARTIFACT_FILE} \(an incomplete copy\?\)"):
        jaxseg.export.load(tmp_path / "copy")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    with pytest.raises(ConfigError, match="is not empty and holds no export"):
        export_predictor(fcn_predictor(), tmp_path / "other", canvas=(64, 64))
