"""eval.py --images through the Predictor: a training workdir's --score_threshold applies."""

import importlib.util
import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from tiny_predictors import drawn_variables

from jaxseg.export import METADATA_FILE
from jaxseg.export.writer import export_predictor
from jaxseg.inference.run import predict_images
from jaxseg.predict import Predictor
from jaxseg.tasks import make_task
from jaxseg.testing import set_tiny_mask_rcnn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mask_rcnn_config(data_dir):
    path = os.path.join(ROOT, "configs", "mask_rcnn_shapes.py")
    spec = importlib.util.spec_from_file_location("mask_rcnn_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    set_tiny_mask_rcnn(config.model)
    config.model.roi_heads.score_threshold = 0.0  # the model keeps every detection
    config.dataset.data_dir = str(data_dir)
    config.compilation_cache_dir = ""
    return config


def _save(workdir, variables):
    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        item_names=("state",),
        options=ocp.CheckpointManagerOptions(create=True),
    )
    state = {
        "step": np.zeros((), np.int32),
        "params": variables["params"],
        "model_state": {k: v for k, v in variables.items() if k != "params"},
    }
    manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    manager.close()


@pytest.fixture(scope="module")
def mask_rcnn_workdir(tmp_path_factory):
    from jaxseg.data import catalog

    data_dir = tmp_path_factory.mktemp("tfds")
    catalog.load_builder("jaxseg_shapes", data_dir=data_dir, config="instance")
    config = _mask_rcnn_config(data_dir)
    workdir = tmp_path_factory.mktemp("run")
    _save(workdir, drawn_variables(make_task(config).model, train=False))
    return config, workdir


def test_score_threshold_applies_with_a_training_config(mask_rcnn_workdir, tmp_path):
    config, workdir = mask_rcnn_workdir
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 57, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    found = {}
    for threshold in (0.0, 1.0):
        out = tmp_path / f"out{threshold}"
        predict_images(
            config,
            str(workdir),
            str(tmp_path / "a.png"),
            output=str(out),
            score_threshold=threshold,
        )
        with open(out / "predictions.json") as f:
            (record,) = json.load(f)["images"]
        found[threshold] = record["detections"]
        assert record["size"] == [40, 57] and record["input_size"] == [40, 57]
    # Before, a config's predictions were cut at 0.5 whatever the flag: both lists the same.
    assert len(found[0.0]) == int(config.model.roi_heads.detections_per_image)
    assert found[1.0] == []
    for d in found[0.0]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 57 and 0 <= y1 <= y2 <= 40 and d["mask_area"] >= 0


def test_a_training_workdir_exports_with_its_source(mask_rcnn_workdir, tmp_path):
    config, workdir = mask_rcnn_workdir
    predictor = Predictor.from_workdir(workdir, config)
    assert predictor.class_names[0] == "background" and predictor.kind == "instance"
    with pytest.raises(ValueError, match=r"--canvas = 100x64: .*multiple of 32"):
        Predictor.from_workdir(workdir, config, canvas=(100, 64))
    export_predictor(predictor, tmp_path / "export", fallback_side=config.dataset.eval_image_size)
    with open(tmp_path / "export" / METADATA_FILE) as f:
        metadata = json.load(f)
    assert metadata["canvas"] == [64, 64]  # config.dataset.eval_image_size: no resize rule
    assert metadata["source"]["step"] == 0 and metadata["model"] == config.model.name
    assert metadata["source"]["checkpoint"] == os.path.join(str(workdir), "checkpoints", "0")
    assert metadata["classes"] == list(predictor.class_names)
