"""Non-finite steps: not applied inside the step, counted and logged, too many stop training."""

import functools
import json
import logging
import os

import jax
import numpy as np
import pytest

from jaxseg.runtime import sharding
from jaxseg.runtime.checkpointing import Checkpointer
from jaxseg.runtime.nonfinite import NonFiniteError, NonFiniteMonitor
from jaxseg.train import make_optimizer, make_schedule, prepare, train_and_evaluate
from jaxseg.train.loop import create_train_state
from jaxseg.train.step import make_train_step


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache_nonfinite"))


def _equal(a, b):
    return all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_a_nan_batch_leaves_parameters_and_optimizer_state_unchanged(tiny_config):
    task = prepare(tiny_config)
    optimizer = make_optimizer(tiny_config.optimizer, 10)
    step = make_train_step(task, optimizer, make_schedule(tiny_config.optimizer, 10))
    loader = task.train_loader(batch_size=2, seed=0, shard_index=0, shard_count=1)
    batch = {k: np.asarray(v) for k, v in next(iter(loader)).items()}
    state = jax.jit(functools.partial(create_train_state, task, optimizer, 0))(batch)
    state, metrics = step(state, batch)  # one real step: Adam's moments are non-zero
    assert float(metrics["nonfinite"]) == 0.0
    before = jax.device_get(state)  # the step donates `state`: keep a host copy

    image = batch["image"].copy()
    image[0, 5, 5, 0] = np.nan  # one bad pixel is enough
    poisoned = dict(batch, image=image)
    state, metrics = step(state, poisoned)
    after = jax.device_get(state)
    assert float(metrics["nonfinite"]) == 1.0
    assert not np.isfinite(float(metrics["loss"]))
    assert int(after.step) == int(before.step) + 1  # the data position moves on
    for field in ("params", "model_state", "opt_state", "rng"):
        assert _equal(getattr(before, field), getattr(after, field)), field

    state, metrics = step(state, batch)  # and training goes on from there
    assert float(metrics["nonfinite"]) == 0.0
    assert not _equal(before.params, jax.device_get(state.params))


def test_monitor_counts_streaks_one_step_late_and_stops(caplog):
    monitor = NonFiniteMonitor(3)

    def metrics(bad):
        return {"nonfinite": np.float32(bad), "loss": np.float32(np.nan if bad else 1.0),
                "grad_norm": np.float32(0.0)}  # fmt: skip

    with caplog.at_level(logging.WARNING):
        for step, bad in enumerate([0, 1, 1, 0, 1, 1], start=1):
            monitor.push(step, metrics(bad))
        monitor.flush()
    assert monitor.total == 4 and monitor.consecutive == 2
    messages = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert [m.split(":")[0] for m in messages] == ["step 2", "step 3", "step 5", "step 6"]
    with pytest.raises(NonFiniteError, match=r"stopped at step 7: 3 steps in a row"):
        monitor.push(7, metrics(1))
        monitor.flush()


def test_checkpointer_refuses_to_save_nan(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    checkpointer.save(1, {"w": np.ones(3, np.float32)}, None)
    with pytest.raises(NonFiniteError, match="holds NaN or Inf"):
        checkpointer.save(2, {"w": np.array([1.0, np.inf, 0.0], np.float32)}, None)
    checkpointer.close()
    assert Checkpointer(str(tmp_path / "checkpoints"), create=False).all_steps() == [1]


def _poison_batches(monkeypatch, steps):
    """Makes the loop's batches of `steps` (1-based) hold NaN images."""
    shard_batch = sharding.shard_batch
    calls = []

    def poisoned(batch, mesh, keys):
        calls.append(None)
        if len(calls) in steps:
            batch = dict(batch, image=np.full_like(batch["image"], np.nan))
        return shard_batch(batch, mesh, keys)

    monkeypatch.setattr(sharding, "shard_batch", poisoned)


def test_training_skips_nonfinite_steps_and_logs_them(
    tiny_config, tmp_path, monkeypatch, compilation_cache, caplog
):
    tiny_config.compilation_cache_dir = compilation_cache
    tiny_config.max_consecutive_nonfinite = 3
    _poison_batches(monkeypatch, {4, 5})  # one in each of two logging intervals
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(tiny_config, str(tmp_path))
    skipped = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert [m.split(":")[0] for m in skipped] == ["step 4", "step 5"], skipped
    with open(tmp_path / "metrics.jsonl") as f:
        train = {r["step"]: r for r in map(json.loads, f) if r["split"] == "train"}
    assert [train[step]["nonfinite_steps"] for step in (2, 4, 6)] == [0, 1, 1]
    assert all(np.isfinite(train[step]["loss"]) for step in (2, 4, 6))  # skipped steps left out
    checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"), create=False)
    for step in checkpointer.all_steps():
        for leaf in jax.tree_util.tree_leaves(checkpointer.restore_raw(step)):
            leaf = np.asarray(leaf)
            assert not np.issubdtype(leaf.dtype, np.floating) or np.all(np.isfinite(leaf))


def test_too_many_nonfinite_steps_stop_training(
    tiny_config, tmp_path, monkeypatch, compilation_cache
):
    tiny_config.compilation_cache_dir = compilation_cache
    tiny_config.max_consecutive_nonfinite = 2
    tiny_config.eval_every_steps = 6
    tiny_config.keep_checkpoints = 2
    _poison_batches(monkeypatch, set(range(3, 100)))
    with pytest.raises(NonFiniteError, match=r"stopped at step 4: 2 steps in a row"):
        train_and_evaluate(tiny_config, str(tmp_path))
    checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"), create=False)
    assert checkpointer.all_steps() == [2]  # the streak's step 4 was not saved
    params = checkpointer.restore_raw(2)["params"]
    assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(params))
