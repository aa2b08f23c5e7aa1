"""train.py killed again and again on one workdir ends bitwise equal to a run never stopped.

One workdir goes through: SIGKILL between checkpoints, SIGKILL inside an asynchronous save
(arrays written, not committed), SIGKILL just before a save's final rename, a truncated
checkpoint, SIGTERM (save and exit 0), and SIGKILL from outside at a moment it does not
choose. Each run must resume from the last complete checkpoint and read exactly the
batches an uninterrupted run reads from there (hashes of every batch); the final train
state (parameters, optimiser and model state, step, PRNG key) must equal the
uninterrupted run's bit for bit (CPU).
"""

import glob
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxseg.runtime.checkpointing import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(ROOT, "tests", "train", "fault_injection.py")
NUM_STEPS = 8

COMMON = [
    "--config.batch_size=2",
    f"--config.num_train_steps={NUM_STEPS}",
    "--config.optimizer.warmup_steps=0",  # the configs' warm-ups are longer than this run
    "--config.log_every_steps=2",
    f"--config.eval_every_steps={NUM_STEPS}",
    "--config.checkpoint_every_steps=2",
    "--config.keep_checkpoints=2",
    "--config.eval.batch_size=4",
    "--config.eval.num_pictures=0",
]
# Per config: the overrides that make it tiny (Mask R-CNN: its own config's sizes).
CONFIGS = {
    "fcn8s_shapes": [
        "--config.model.width=0.03125",
        "--config.dataset.config=small",
        "--config.dataset.image_size=32",
        "--config.dataset.eval_image_size=64",
        "--config.dataset.eval_split=validation[:4]",
    ],
    "mask_rcnn_shapes": ["--config.dataset.eval_split=validation[:4]"],
}


def _config_param(name):
    exists = os.path.exists(os.path.join(ROOT, "configs", f"{name}.py"))
    return pytest.param(
        name, marks=pytest.mark.skipif(not exists, reason=f"configs/{name}.py not written yet")
    )


class Runs:
    """Starts train.py (through the fault-injection helper) on workdirs of one config."""

    def __init__(self, config_name, tmp_path):
        self.tmp_path = tmp_path
        self.args = [
            "--config",
            os.path.join(ROOT, "configs", f"{config_name}.py"),
            *COMMON,
            *CONFIGS[config_name],
            f"--config.dataset.data_dir={tmp_path / 'tfds'}",
            f"--config.compilation_cache_dir={tmp_path / 'xla'}",
        ]
        self.count = 0

    def start(self, workdir, fault=""):
        """Returns (Popen, batch log path) of a run on `workdir` with `fault`."""
        self.count += 1
        batch_log = str(self.tmp_path / f"batches{self.count}.txt")
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "PYTHONPATH": ROOT,
            "JAXSEG_FAULT": fault,
            "JAXSEG_BATCH_LOG": batch_log,
        }
        env.pop("JAXSEG_COMPILATION_CACHE", None)
        process = subprocess.Popen(
            [sys.executable, HELPER, *self.args, "--workdir", str(workdir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return process, batch_log

    def run(self, workdir, fault=""):
        """Returns (returncode, stderr, batches, resumed step or None) of a finished run."""
        process, batch_log = self.start(workdir, fault)
        _, stderr = process.communicate(timeout=600)
        return _result(process, stderr, batch_log)


def _result(process, stderr, batch_log):
    batches = open(batch_log).read().split() if os.path.exists(batch_log) else []
    resumed = re.findall(r"resumed from \S+ at step (\d+)", stderr)
    return process.returncode, stderr, batches, int(resumed[0]) if resumed else None


def _truncate_arrays(step_dir):
    """Cuts every array file of a checkpoint's state in half (a disk that filled up)."""
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", [_config_param(name) for name in CONFIGS])
def test_killed_runs_resume_exactly(config_name, tmp_path):
    runs = Runs(config_name, tmp_path)
    straight, workdir = tmp_path / "straight", tmp_path / "killed"
    code, stderr, reference, _ = runs.run(straight)
    assert code == 0, stderr[-3000:]
    assert len(reference) == NUM_STEPS

    def check(result, *, code, resumed):
        returncode, stderr, batches, resumed_at = result
        assert returncode == code, stderr[-3000:]
        assert resumed_at == resumed, stderr[-3000:]
        start = resumed or 0
        # No batch skipped, none repeated: this run read the reference's batches from its
        # resume step on.
        assert batches == reference[start : start + len(batches)], (start, len(batches))
        return stderr

    checkpoints = workdir / "checkpoints"

    def complete_steps():
        names = os.listdir(checkpoints) if checkpoints.exists() else []
        return sorted(int(name) for name in names if name.isdigit())

    def last_complete():
        return max(complete_steps(), default=None)

    # Where a kill lands relative to the asynchronous saves depends on the machine's
    # speed, so each run must resume from whatever complete checkpoint is newest.
    check(runs.run(workdir, "kill_after_step:3"), code=-9, resumed=None)
    assert last_complete() in (None, 2)
    expected = last_complete()
    check(runs.run(workdir, "kill_in_commit:4/state"), code=-9, resumed=expected)
    assert any(".orbax-checkpoint-tmp" in name for name in os.listdir(checkpoints))
    assert 4 not in complete_steps()
    expected = last_complete()
    check(runs.run(workdir, "kill_in_commit:6/step"), code=-9, resumed=expected)
    assert complete_steps() == [2, 4]  # 6 written but never renamed into place

    _truncate_arrays(checkpoints / "4")
    stderr = check(runs.run(workdir, "sigterm_after_step:5"), code=0, resumed=2)
    assert re.search(r"checkpoint \S+/4 is not usable .*moved to", stderr), stderr[-3000:]
    assert "SIGTERM: saved step 5" in stderr
    assert os.listdir(str(checkpoints) + ".corrupt")[0].startswith("4-")
    assert last_complete() == 5

    # SIGKILL from outside, at whatever moment the run has reached once checkpoint 6 exists.
    process, batch_log = runs.start(workdir)
    while process.poll() is None and 6 not in complete_steps():
        time.sleep(0.02)
    process.kill()
    _, stderr = process.communicate(timeout=600)
    check(_result(process, stderr, batch_log), code=process.returncode, resumed=5)

    expected = last_complete()
    check(runs.run(workdir), code=0, resumed=expected)
    assert not [name for name in os.listdir(checkpoints) if "tmp" in name]
    states = [
        Checkpointer(str(path / "checkpoints"), create=False).restore_raw(NUM_STEPS)
        for path in (straight, workdir)
    ]
    flat = [jax.tree_util.tree_leaves_with_path(s) for s in states]
    assert [p for p, _ in flat[0]] == [p for p, _ in flat[1]]
    differ = [
        jax.tree_util.keystr(path)
        for (path, a), (_, b) in zip(*flat, strict=True)
        if not np.array_equal(np.asarray(a), np.asarray(b))
    ]
    assert not differ, differ
