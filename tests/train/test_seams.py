"""The seams a new user touches first: a second run, Ctrl-C, a full disk, slips in a config.

Each test here failed before the guarantee it checks was built (docs/reliability.md).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxseg.config import ConfigError, base_config, check_config
from jaxseg.runtime.checkpointing import Checkpointer, CheckpointSaveError
from jaxseg.runtime.workdir_lock import WorkdirLock, WorkdirLockedError
from jaxseg.tasks.instance import fpn_scales_fit
from jaxseg.train import prepare, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(ROOT, "tests", "train", "fault_injection.py")


def _config_file(tmp_path, data_dir, **overrides):
    """Writes a config file of the tiny FCN-8s (tests/train/conftest.py); returns its path."""
    path = tmp_path / "tiny_config.py"
    path.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(ROOT, "tests", "train")!r})
        from conftest import make_tiny_config

        def get_config():
            config = make_tiny_config({data_dir!r})
            config.update({overrides!r})
            return config
        """)
    )
    return str(path)


def _train_py(args, *, fault="", timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXSEG_FAULT": fault}
    return subprocess.run(
        [sys.executable, HELPER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _steps(workdir):
    return Checkpointer(os.path.join(workdir, "checkpoints"), create=False).all_steps()


# A second run on one workdir.


def test_a_second_run_on_a_workdir_is_refused_naming_the_first(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[2]);"
            "from jaxseg.runtime.workdir_lock import WorkdirLock;"
            "lock = WorkdirLock(sys.argv[1]); lock.acquire(); print('locked', flush=True);"
            "time.sleep(120)",
            str(workdir),
            ROOT,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLockedError, match=f"pid {holder.pid} on host"):
            train_and_evaluate(tiny_config, str(workdir))
        assert not os.path.exists(workdir / "checkpoints")  # nothing of the first touched
    finally:
        holder.kill()  # SIGKILL: the lock it leaves behind is stale
        holder.wait()
    with WorkdirLock(str(workdir)):  # taken over at once
        pass
    lock = WorkdirLock(str(workdir))
    lock.acquire()
    with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):
        WorkdirLock(str(workdir)).acquire()  # the same process, a second holder
    lock.release()


# Ctrl-C.


def test_ctrl_c_saves_the_step_and_exits_130_then_resumes(shapes_data_dir, tmp_path):
    config = _config_file(tmp_path, shapes_data_dir, num_train_steps=8, eval_every_steps=8)
    workdir = str(tmp_path / "run")
    args = ["--config", config, "--workdir", workdir]
    result = _train_py(args, fault="sigint_after_step:3")
    assert result.returncode == 130, result.stderr[-3000:]
    assert _steps(workdir)[-1] == 3  # not a checkpoint step: saved because of Ctrl-C
    assert "Traceback" not in result.stderr
    assert "Ctrl-C: saved step 3" in result.stderr.splitlines()[-1]
    result = _train_py(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and " at step 3" in result.stderr
    assert _steps(workdir)[-1] == 8


def test_a_second_ctrl_c_ends_the_process_at_once():
    script = textwrap.dedent("""
        import signal, sys, time
        sys.path.insert(0, sys.argv[1])
        from jaxseg.runtime.preemption import PreemptionGuard
        with PreemptionGuard() as guard:
            signal.raise_signal(signal.SIGINT)
            assert guard.requested and guard.interrupted, guard.signal_name
            print("first noted", flush=True)
            signal.raise_signal(signal.SIGINT)
            time.sleep(30)
        print("not reached", flush=True)
    """)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script, ROOT], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.splitlines() == ["first noted"], result.stderr
    assert result.returncode == -signal.SIGINT
    assert time.monotonic() - start < 25  # did not wait out the sleep


# A full disk.


def test_a_failed_save_stops_training_with_one_message(shapes_data_dir, tmp_path):
    config = _config_file(
        tmp_path, shapes_data_dir, num_train_steps=40, eval_every_steps=40, keep_checkpoints=3
    )
    workdir = str(tmp_path / "run")
    args = ["--config", config, "--workdir", workdir]
    result = _train_py(args, fault="enospc_in_commit:4")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: saving checkpoint 4 in ")
    assert "No space left on device" in last and "latest complete: step 2" in last
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) < 25, result.stderr
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert max(r["step"] for r in records) <= 6  # stopped at once, not at the end
    assert _steps(workdir) == [2]
    result = _train_py(args)  # room again: resumes from the intact step 2
    assert result.returncode == 0, result.stderr[-3000:]
    assert " at step 2" in result.stderr
    assert _steps(workdir)[-1] == 40


def test_checkpointer_reports_a_background_failure_at_the_next_check(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def full_disk(self, *args, **kwargs):
        if self.get_final().name == "2":
            raise OSError(28, "No space left on device", str(self.get_final()))
        return await finalize(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full_disk)
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    state = {"w": np.ones((3,), np.float32)}
    checkpointer.save(1, state, None)
    checkpointer.save(2, state, None)
    with pytest.raises(CheckpointSaveError, match=r"saving checkpoint 2 in .*No space left"):
        checkpointer.wait()
    assert checkpointer.all_steps() == [1]
    checkpointer.close()


# Mistakes that can be known before the first step.


def test_a_wrong_split_is_refused_before_training(tiny_config, tmp_path):
    tiny_config.dataset.eval_split = "valid"
    with pytest.raises(ConfigError, match=r"eval_split = 'valid' is not a split.*validation"):
        train_and_evaluate(tiny_config, str(tmp_path / "run"))
    tiny_config.dataset.eval_split = "validation[:0]"
    with pytest.raises(ConfigError, match="holds no examples"):
        prepare(tiny_config)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_failed_evaluation_saves_its_step_first(tiny_config, tmp_path, monkeypatch):
    from jaxseg.tasks import semantic as semantic_task

    def broken(self, **kwargs):
        raise OSError("the evaluation files went away")

    monkeypatch.setattr(semantic_task.SemanticSegmentationTask, "eval_loader", broken)
    workdir = str(tmp_path / "run")
    with pytest.raises(OSError, match="went away"):
        train_and_evaluate(tiny_config, workdir)  # evaluates first at step 3
    assert _steps(workdir)[-1] == 3


def test_the_best_metric_comes_from_the_task(shapes_data_dir):
    config = base_config()  # a Mask R-CNN config that forgets eval.best_metric
    config.model.name = "mask_rcnn_resnet18_fpn"
    config.model.width = 0.25
    config.dataset.config = "small"
    config.dataset.data_dir = shapes_data_dir
    assert prepare(config).best_metric == "segm_AP"
    config.eval.best_metric = "mean_iou"
    with pytest.raises(ConfigError, match=r"'mean_iou' is not a metric of mask_rcnn.*bbox_AP"):
        prepare(config)


def test_a_best_metric_typo_gets_a_did_you_mean(tiny_config):
    assert prepare(tiny_config).best_metric == "mean_iou"
    tiny_config.eval.best_metric = "mean_iu"
    with pytest.raises(ConfigError, match="did you mean 'mean_iou'"):
        prepare(tiny_config)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optimizer.learning_rate", 0.0, "> 0"),
        ("optimizer.learning_rate", -0.01, "> 0"),
        ("optimizer.weight_decay", -1e-4, ">= 0"),
        ("optimizer.warmup_steps", 1001, "at most num_train_steps"),
        ("optimizer.momentum", 1.0, r"in \[0, 1\)"),
        ("optimizer.grad_clip_norm", -1.0, ">= 0"),
        ("optimizer.decay_boundaries", (0.9, 0.5), "increasing fractions"),
        ("optimizer.decay_factor", 0.0, r"in \(0, 1\]"),
        ("dataset.scale_range", (2.0, 0.5), "0 < low <= high"),
        ("dataset.worker_count", -1, ">= 0"),
        ("eval.num_pictures", -1, ">= 0"),
        ("loss.aux_weight", -0.5, ">= 0"),
        ("optimizer.schedule", "cosin", "did you mean 'cosine'"),
    ],
)
def test_impossible_values_are_refused(key, value, message):
    config = base_config()
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(ConfigError, match=f"config.{key}.*{message}"):
        check_config(config)


def test_mask_rcnn_sizes_that_do_not_fit_are_refused_with_the_nearest(shapes_data_dir):
    config = base_config()
    config.model.name = "mask_rcnn_resnet18_fpn"
    config.dataset.config = "small"
    config.dataset.data_dir = shapes_data_dir
    config.dataset.image_size = 40
    with pytest.raises(
        ConfigError, match=r"image_size = 40.*nearest sizes that work are 32 and 46"
    ):
        prepare(config)
    config.dataset.image_size = 48
    config.dataset.eval_image_size = 65
    with pytest.raises(ConfigError, match=r"eval_image_size = 65.*are 64 and 68"):
        prepare(config)


@pytest.mark.parametrize("size", [32, 33, 40, 46, 65, 68])
def test_the_size_rule_is_the_models(size):
    from jaxseg.models import build_model

    model = build_model("mask_rcnn_resnet18_fpn", num_classes=2, width=0.125)
    images = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
    try:
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
        works = True
    except ValueError as e:
        assert "scales must be strictly decreasing" in str(e)
        works = False
    assert works == fpn_scales_fit(size)


@pytest.mark.parametrize("name", ["fcn32s", "fcn8s", "fcn_resnet50"])
@pytest.mark.parametrize("size", [33, 40, 65])
def test_fcn_takes_any_size(name, size):
    from jaxseg.models import build_model

    width = {"fcn_resnet50": 0.0625}.get(name, 0.03125)
    model = build_model(name, num_classes=3, width=width)
    images = jax.ShapeDtypeStruct((1, size, size + 7, 3), np.float32)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], images)
    logits = out["out"] if isinstance(out, dict) else out
    assert logits.shape == (1, size, size + 7, 3)


# The command line.


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.optimizer.learning_rat=0.1", "did you mean optimizer.learning_rate"),
        ("--config.modl.width=0.5", 'Did you mean "model"'),
        ("--config.model.widht=0.5", "widht -> width"),
        ("--config.model.num_classes=3", "num_classes = 3 but dataset"),
        ("--config.model.width=wide", "could not convert string to float"),
        ("--config.dtype=float16", "config.dtype must be one of"),
    ],
)
def test_command_line_mistakes_are_one_line(shapes_data_dir, tmp_path, override, message):
    config = _config_file(tmp_path, shapes_data_dir)
    result = _train_py(["--config", config, "--workdir", str(tmp_path / "run"), override])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_eval_py_mistakes_are_one_line(shapes_data_dir, tmp_path):
    config = _config_file(tmp_path, shapes_data_dir)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for args, message in [
        (["--workdir", str(tmp_path / "none")], "no checkpoints in"),
        (["--workdir", str(tmp_path), "--config.eval.best_metric=mean_iu"], "did you mean"),
        (["--workdir", str(tmp_path), "--images", str(tmp_path / "nothing*.png")], "no file"),
    ]:
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "eval.py"), "--config", config, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert lines[0].startswith("eval.py: error: ") and message in lines[0], lines


def test_a_normal_run_is_quiet_and_pictures_reach_tensorboard(shapes_data_dir, tmp_path):
    config = _config_file(tmp_path, shapes_data_dir, num_train_steps=4, eval_every_steps=4)
    workdir = str(tmp_path / "run")
    args = ["--config", config, "--workdir", workdir, "--config.eval.summary_pictures=2"]
    result = _train_py(args)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 10, result.stderr  # progress, the evaluation, saves
    assert any("eval mean_iou" in line for line in lines)
    assert any("checkpoint ->" in line for line in lines)
    events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
    blob = b"".join(open(os.path.join(workdir, f), "rb").read() for f in events)
    assert b"pictures/000" in blob and b"pictures/001" in blob and b"pictures/002" not in blob
    verbose = _train_py([*args, "--config.num_train_steps=6", "--verbosity=0"])
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert len(verbose.stderr.splitlines()) > 2 * len(lines)  # every library's INFO lines


def test_a_config_name_that_parses_as_a_number_stays_a_name():
    from jaxseg.tasks.base import dataset_kwargs

    config = base_config()
    config.dataset.name = "coco"
    config.dataset.config = 2017  # what `--config.dataset.config=2017` gives
    assert dataset_kwargs(config.dataset)["config"] == "2017"
