"""Mask R-CNN: train.py then eval.py as a user runs them, reading eval/metrics.json."""

import json
import math
import os
import subprocess
import sys

import pytest

from jaxseg.testing import TINY_MASK_RCNN_WIDTHS, model_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_mask_rcnn_train_then_eval(tmp_path):
    overrides = [
        *model_flags(TINY_MASK_RCNN_WIDTHS),
        "--config.dataset.config=small",
        "--config.dataset.eval_split=validation[:6]",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        "--config.dataset.max_instances=6",
        "--config.dataset.mask_size=28",
        "--config.batch_size=2",
        "--config.num_train_steps=4",
        "--config.optimizer.warmup_steps=0",  # the config's 50 is longer than this run
        "--config.log_every_steps=2",
        "--config.eval_every_steps=4",
        "--config.checkpoint_every_steps=2",
        "--config.eval.batch_size=3",
        "--config.eval.num_pictures=2",
        f"--config.compilation_cache_dir={tmp_path / 'cache'}",
    ]
    workdir = str(tmp_path / "run")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("JAXSEG_COMPILATION_CACHE", None)
    config = os.path.join(ROOT, "configs", "mask_rcnn_shapes.py")
    common = ["--config", config, "--workdir", workdir]
    for script in ("train.py", "eval.py"):
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, script), *common, *overrides],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    assert "segm" in result.stdout and "bbox" in result.stdout and "pictures:" in result.stdout
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            value = metrics[f"{iou_type}_{name}"]
            # None where the split has no object of that size (pycocotools' -1).
            assert value is None or 0.0 <= value <= 1.0, (iou_type, name, value)
        assert metrics[f"{iou_type}_AP"] is not None and not math.isnan(metrics[f"{iou_type}_AP"])
    assert metrics["step"] == 4
    pictures = sorted(os.listdir(os.path.join(workdir, "eval", "pictures")))
    assert len(pictures) == 2 and all(p.endswith(".png") for p in pictures)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    train = [line for line in lines if line["split"] == "train"]
    assert len(train) == 2
    for name in ("rpn_objectness", "rpn_box", "classifier", "box_reg", "mask"):
        assert math.isfinite(train[-1][f"loss_{name}"])
    assert [line["step"] for line in lines if line["split"] == "eval"] == [4]
