"""The scripts in examples/ run and print what the README shows."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_roi_pool_vs_roi_align_example():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "roi_pool_vs_roi_align.py")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "0.400  0.900" in out  # RoIPool of the fractional RoI
    assert "0.295  0.624" in out  # RoIAlign of the same RoI
    last = out.strip().splitlines()[-1].split()
    assert last == ["1.00", "28.50", "28.50", "56.00"]
