"""train.py then eval.py as a user runs them, on generated data, reading metrics.json."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_train_then_eval(tmp_path):
    overrides = [
        "--config.model.width=0.03125",
        "--config.dataset.config=small",
        "--config.dataset.image_size=48",
        "--config.dataset.eval_image_size=64",
        "--config.dataset.eval_split=validation[:12]",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        "--config.batch_size=4",
        "--config.num_train_steps=8",
        "--config.optimizer.warmup_steps=0",  # the config's 20 is longer than this run
        "--config.log_every_steps=4",
        "--config.eval_every_steps=4",
        "--config.checkpoint_every_steps=4",
        "--config.eval.batch_size=4",
        "--config.eval.num_pictures=3",
        f"--config.compilation_cache_dir={tmp_path / 'cache'}",
    ]
    workdir = str(tmp_path / "run")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("JAXSEG_COMPILATION_CACHE", None)
    common = ["--config", os.path.join(ROOT, "configs", "fcn8s_shapes.py"), "--workdir", workdir]
    for script in ("train.py", "eval.py"):
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, script), *common, *overrides],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    assert "mean IU" in result.stdout and "pictures:" in result.stdout
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert set(metrics["per_class_iou"]) == {"background", "circle", "square", "triangle", "bar"}
    assert metrics["step"] in (4, 8)
    pictures = sorted(os.listdir(os.path.join(workdir, "eval", "pictures")))
    assert len(pictures) == 3 and all(p.endswith(".png") for p in pictures)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        splits = [json.loads(line)["split"] for line in f]
    assert splits.count("train") == 2 and splits.count("eval") == 2
