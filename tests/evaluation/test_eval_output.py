"""Evaluating a workdir without writing into it: `--output`, and read-only workdirs."""

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import pytest
from PIL import Image
from tiny_workdirs import numpy_variables, save_variables, tiny_fcn_config

from jaxseg.inference.run import evaluate, predict_images
from jaxseg.tasks import make_task


@pytest.fixture(scope="module")
def shapes_data_dir(tmp_path_factory):
    """A TFDS data dir holding `jaxseg_shapes/small` (built in a few seconds)."""
    from jaxseg.data import catalog

    data_dir = tmp_path_factory.mktemp("tfds")
    catalog.load_builder("jaxseg_shapes", data_dir=data_dir, config="small")
    return str(data_dir)


@pytest.fixture
def workdir_and_config(tmp_path, shapes_data_dir):
    config = tiny_fcn_config(shapes_data_dir)
    config.dataset.eval_split = "validation[:4]"
    config.eval.batch_size = 2
    config.eval.num_pictures = 2
    workdir = tmp_path / "run"
    save_variables(workdir, numpy_variables(make_task(config).model, train=False))
    return workdir, config


def _snapshot(root):
    """Returns every path under `root` with its size and modification time (ns)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            stat = os.lstat(path)
            found[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
    stat = os.lstat(root)
    found["."] = (stat.st_size, stat.st_mtime_ns)
    return found


def _chattr(flag, path, *, recursive):
    command = ["chattr", *(["-R"] if recursive else []), flag, str(path)]
    return subprocess.run(command, capture_output=True).returncode == 0


@contextlib.contextmanager
def _read_only(path, monkeypatch, *, recursive):
    """Makes `path` (and, if `recursive`, everything below it) unwritable, really if possible.

    Root ignores permission bits, so as root the immutable attribute is set (ext4, xfs,
    btrfs); where that is refused too, a write under `path` is made to fail in this process
    (`os.makedirs` and temporary files are how the workdir checks probe it). Yields how.
    """
    if os.geteuid() != 0:
        modes = {}
        for directory, _, files in os.walk(path) if recursive else [(str(path), [], [])]:
            for p in [directory] + [os.path.join(directory, f) for f in files]:
                modes[p] = os.stat(p).st_mode
                os.chmod(p, modes[p] & 0o555)
        try:
            yield "chmod"
        finally:
            for p, mode in modes.items():
                os.chmod(p, mode)
        return
    if _chattr("+i", path, recursive=recursive):
        try:
            yield "chattr"
        finally:
            _chattr("-i", path, recursive=recursive)
        return
    root = os.path.abspath(path)
    makedirs, temporary_file = os.makedirs, tempfile.TemporaryFile

    def refuse(target):
        target = os.path.abspath(os.fspath(target))
        if target == root or target.startswith(root + os.sep):
            raise PermissionError(13, "Permission denied (injected)", target)

    def guarded_makedirs(name, *args, **kwargs):
        if not os.path.isdir(name):
            refuse(name)
        return makedirs(name, *args, **kwargs)

    def guarded_temporary_file(*args, dir=None, **kwargs):
        refuse(dir or tempfile.gettempdir())
        return temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(os, "makedirs", guarded_makedirs)
    monkeypatch.setattr(tempfile, "TemporaryFile", guarded_temporary_file)
    try:
        yield "injected"
    finally:
        monkeypatch.undo()


def test_evaluate_writes_into_output_and_never_into_the_workdir(
    workdir_and_config, tmp_path, monkeypatch
):
    workdir, config = workdir_and_config
    before = _snapshot(workdir)
    out = tmp_path / "out"
    with _read_only(workdir, monkeypatch, recursive=True):
        result = evaluate(config, str(workdir), output=str(out))
    assert _snapshot(workdir) == before  # nothing written, moved or touched
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["step"] == result["step"] == 0
    assert 0.0 <= metrics["mean_iou"] <= 1.0
    assert len(os.listdir(out / "pictures")) == 2


def test_read_only_workdir_without_output_is_refused_naming_output(
    workdir_and_config, tmp_path, monkeypatch
):
    workdir, config = workdir_and_config
    Image.new("RGB", (40, 30)).save(tmp_path / "photo.png")
    before = _snapshot(workdir)
    with _read_only(workdir, monkeypatch, recursive=False):
        with pytest.raises(ValueError, match=r"not writable.*--output") as error:
            evaluate(config, str(workdir))
        assert os.path.join(str(workdir), "eval") in str(error.value)
        with pytest.raises(ValueError, match=r"not writable.*--output") as error:
            predict_images(config, str(workdir), str(tmp_path / "photo.png"))
        assert os.path.join(str(workdir), "images") in str(error.value)
    assert _snapshot(workdir) == before


@pytest.mark.slow
def test_eval_py_output_flag_on_a_read_only_workdir(tmp_path, shapes_data_dir, monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    overrides = {
        "model.width": 0.03125,
        "dataset.config": "small",
        "dataset.data_dir": shapes_data_dir,
        "dataset.eval_image_size": 64,
        "dataset.eval_split": "validation[:4]",
        "eval.batch_size": 2,
        "eval.num_pictures": 1,
        "compilation_cache_dir": "",
    }
    spec = importlib.util.spec_from_file_location("config", f"{root}/configs/fcn8s_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        group, _, name = key.rpartition(".")
        setattr(config[group] if group else config, name, value)
    workdir = tmp_path / "run"
    save_variables(workdir, numpy_variables(make_task(config).model, train=False))
    command = [sys.executable, f"{root}/eval.py", "--config", f"{root}/configs/fcn8s_shapes.py"]
    command += ["--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in overrides.items()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root}
    env.pop("JAXSEG_COMPILATION_CACHE", None)
    before = _snapshot(workdir)
    with _read_only(workdir, monkeypatch, recursive=True) as how:
        result = subprocess.run(
            [*command, "--output", str(tmp_path / "out")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        if how != "injected":  # a subprocess sees only real permissions
            refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            assert refused.returncode != 0 and "give --output DIR" in refused.stderr
    assert _snapshot(workdir) == before
    assert "mean IU" in result.stdout
    with open(tmp_path / "out" / "metrics.json") as f:
        assert 0.0 <= json.load(f)["mean_iou"] <= 1.0
    assert len(os.listdir(tmp_path / "out" / "pictures")) == 1
