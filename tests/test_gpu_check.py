"""benchmarks/gpu_check.py: its imports work without the four packages the GPU image lacks,
its correctness verdict follows the tolerances, and its CPU dry run (--tiny) prints the table
rows and the correctness line."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT
    )


def test_block_missing_blocks_the_four_and_leaves_what_the_check_imports():
    # The four are installed here, so this shows that the blocker bites, and that the
    # jaxseg packages gpu_check.py uses (and their transitive imports) get by without them.
    out = _python(
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu_check; "
        "gpu_check.block_missing(); "
        "import jaxseg.convert, jaxseg.detection, jaxseg.models, optax, torch, torchvision\n"
        "for name in gpu_check.MISSING:\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as e:\n"
        "        print('blocked', name, e)\n"
        "try:\n"
        "    import jaxseg.train\n"
        "except ImportError as e:\n"
        "    print('jaxseg.train', e)\n"
    )
    assert out.returncode == 0, out.stderr
    for name in ("grain", "tensorflow_datasets", "ml_collections", "pycocotools"):
        assert f"blocked {name} No module named '{name}' (blocked by --block-missing)" in out.stdout
    # jaxseg.train needs grain / ml_collections at import: the check cannot use it.
    assert "jaxseg.train No module named" in out.stdout


def _correctness(**mask_rcnn):
    detections = dict(
        size=128,
        fpn=1e-7,
        detections_gpu=50,
        detections_cpu=50,
        box_px=1e-4,
        score=1e-7,
        mask=1e-6,
        classes_equal=True,
        one_to_one=True,
    )
    return {
        "accelerator": "cuda:0",
        "cpu": "TFRT_CPU_0",
        "precision": "highest",
        "fcn": {"size": 64, "logits": 1e-7},
        "mask_rcnn": {**detections, **mask_rcnn},
    }


@pytest.mark.parametrize(
    "change",
    [
        {"fpn": 2e-4},
        {"box_px": 0.5},
        {"score": 1e-3},
        {"mask": 0.1},
        {"detections_cpu": 49},
        {"classes_equal": False},
        {"one_to_one": False},
        {"fpn": math.nan},
    ],
)
def test_correctness_line_fails_outside_a_tolerance(change):
    gpu_check = _load()
    line, ok = gpu_check._correctness_line(_correctness())
    assert ok and line.endswith(": PASS") and "cuda:0 vs TFRT_CPU_0" in line
    line, ok = gpu_check._correctness_line(_correctness(**change))
    assert not ok and line.endswith(": FAIL"), line


def test_correctness_line_says_when_both_sides_are_the_cpu():
    gpu_check = _load()
    c = {**_correctness(), "accelerator": "TFRT_CPU_0"}
    line, _ = gpu_check._correctness_line(c)
    assert "both on the CPU: a dry run of the check, not a check" in line


@pytest.mark.slow
def test_tiny_dry_run_prints_the_table_and_the_correctness_line(tmp_path):
    argv = ["--tiny", "--block-missing", "--steps", "1", "--warmup", "1"]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--json", str(tmp_path / "gpu_check.json")],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-5000:]
    lines = out.stdout.splitlines()
    number = r"\s+(\d+\.\d+)"
    ratio = r"\s+(\d+\.\d\dx)"
    for label in ("Mask R-CNN R50-FPN 128x128", "FCN-8s VGG16 64x64"):
        row = [line for line in lines if line.startswith(label)]
        assert len(row) == 1, out.stdout
        # batch, jaxseg f32, jaxseg bf16, torch AMP img/s, bf16/AMP, f32/AMP, compile s
        pattern = label + r"\s+1" + number * 3 + ratio * 2 + r"\s+\d+/\d+$"
        assert re.match(pattern, row[0]), row[0]
    (correctness,) = [line for line in lines if line.startswith("correctness (")]
    assert correctness.endswith(": PASS"), correctness
    assert "FCN-8s 64px logits" in correctness and "Mask R-CNN 128px FPN" in correctness
    assert re.search(r"(\d+) = \1 detections", correctness)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    runs = [r for r in report["runs"] if r["kind"] != "correctness"]
    assert len(runs) == 6
    for run in runs:
        assert "status" not in run, run  # set only for a failed, timed-out or skipped run
        assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last"]), run
        assert run["images_per_s"] > 0
    assert report["correctness_ok"] is True


@pytest.mark.parametrize("value, text", [(1.0, "1.00"), (0.5, "0.50"), (10, "10.0")])
def test_speed_cells_always_have_a_decimal_point(value, text):
    # A dry-run figure of exactly 1 img/s once printed as "1", which the table's readers
    # (and the test above) take for a batch size.
    assert _load()._speed(value) == text
