"""The generic loop: steps reduce the loss, resume is exact, staged init copies parameters."""

import functools
import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxseg.models import transplant
from jaxseg.runtime.checkpointing import Checkpointer
from jaxseg.train import make_optimizer, make_schedule, prepare, train_and_evaluate
from jaxseg.train.init_from import read_variables
from jaxseg.train.loop import create_train_state
from jaxseg.train.step import make_train_step


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """One compilation cache for the runs of this module (so repeated runs do not recompile)."""
    return str(tmp_path_factory.mktemp("xla_cache"))


def _train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def test_steps_on_one_batch_reduce_the_loss(tiny_config):
    task = prepare(tiny_config)
    optimizer = make_optimizer(tiny_config.optimizer, 10)
    step = make_train_step(task, optimizer, make_schedule(tiny_config.optimizer, 10))
    loader = task.train_loader(batch_size=4, seed=0, shard_index=0, shard_count=1)
    batch = {k: jax.numpy.asarray(v) for k, v in next(iter(loader)).items()}
    state = jax.jit(functools.partial(create_train_state, task, optimizer, 0))(batch)
    losses = []
    for _ in range(8):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 8
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_continues_from_the_same_step_and_data(tiny_config, tmp_path, compilation_cache):
    tiny_config.compilation_cache_dir = compilation_cache
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(tiny_config, straight)

    interrupted = tiny_config.copy_and_resolve_references()
    interrupted.num_train_steps = 4  # stops after 4 steps (the schedule is constant)
    train_and_evaluate(interrupted, resumed)
    assert Checkpointer(os.path.join(resumed, "checkpoints"), create=False).latest_step() == 4
    train_and_evaluate(tiny_config, resumed)  # picks up at step 4

    assert sorted(_train_losses(resumed)) == [2, 4, 6]
    assert _train_losses(resumed)[6] == _train_losses(straight)[6]  # bitwise (CPU)
    params = []
    for workdir in (straight, resumed):
        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
        assert checkpointer.latest_step() == 6
        params.append(checkpointer.restore_raw(6)["params"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, *params)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(resumed))


def test_best_checkpoint_is_kept_beside_the_last(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    state = {"w": np.zeros(3, np.float32)}
    for step, iou in enumerate([0.1, 0.9, 0.2, None, 0.3], start=1):
        metrics = None if iou is None else {"mean_iou": iou}
        checkpointer.save(step, {"w": state["w"] + step}, None, metrics=metrics)
    checkpointer.close()
    reopened = Checkpointer(str(tmp_path / "checkpoints"), create=False)
    assert reopened.all_steps() == [2, 4, 5]
    assert reopened.best_step() == 2
    np.testing.assert_array_equal(reopened.restore_raw(2)["w"], [2, 2, 2])


def test_init_from_copies_matching_parameters(tiny_config, tmp_path, compilation_cache):
    coarse = tiny_config.copy_and_resolve_references()
    coarse.model.name = "fcn32s"
    coarse.num_train_steps = 2
    coarse.compilation_cache_dir = compilation_cache
    train_and_evaluate(coarse, str(tmp_path / "fcn32s"))
    saved, _ = read_variables(str(tmp_path / "fcn32s"))

    fine = tiny_config.copy_and_resolve_references()
    fine.model.name = "fcn16s"
    fine.num_train_steps = 1
    fine.init_from = str(tmp_path / "fcn32s")
    fine.compilation_cache_dir = compilation_cache
    task = prepare(fine)
    create = functools.partial(create_train_state, task, make_optimizer(fine.optimizer, 1), 1)
    state = jax.jit(create)(task.input_spec(2))
    merged = traverse_util.flatten_dict(transplant(saved, state.variables)[0], sep="/")
    source = traverse_util.flatten_dict(saved, sep="/")
    assert merged.keys() == traverse_util.flatten_dict(state.variables, sep="/").keys()
    for path in (
        "params/backbone/conv1_1/kernel",
        "params/backbone/fc7/kernel",
        "params/score_fr/kernel",
    ):
        np.testing.assert_array_equal(merged[path], source[path])
    assert np.any(source["params/score_fr/kernel"] != 0)  # it was trained, so copying is seen
    np.testing.assert_array_equal(merged["params/score_pool4/kernel"], 0)

    train_and_evaluate(fine, str(tmp_path / "fcn16s"))  # the loop path runs too
    assert _train_losses(str(tmp_path / "fcn16s")).keys() == {1}


def test_init_from_refuses_other_shapes(tiny_config, tmp_path, compilation_cache):
    coarse = tiny_config.copy_and_resolve_references()
    coarse.num_train_steps = 1
    coarse.compilation_cache_dir = compilation_cache
    train_and_evaluate(coarse, str(tmp_path / "narrow"))
    wide = tiny_config.copy_and_resolve_references()
    wide.model.width = 0.0625
    wide.init_from = str(tmp_path / "narrow")
    with pytest.raises(ValueError, match="does not fit the model"):
        train_and_evaluate(wide, str(tmp_path / "wide"))
    assert not os.listdir(tmp_path / "wide" / "checkpoints")


def test_bfloat16_compute_keeps_float32_parameters(tiny_config):
    tiny_config.dtype = "bfloat16"
    task = prepare(tiny_config)
    optimizer = make_optimizer(tiny_config.optimizer, 2)
    step = make_train_step(task, optimizer, make_schedule(tiny_config.optimizer, 2))
    batch = {
        "image": jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3)),
        "label": jax.numpy.ones((2, 32, 32), jax.numpy.int32),
    }
    state = jax.jit(functools.partial(create_train_state, task, optimizer, 0))(batch)
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    dtypes = {p.dtype for p in jax.tree_util.tree_leaves(state.params)}
    assert dtypes == {np.dtype("float32")}
