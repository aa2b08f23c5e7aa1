"""A checkpoint is complete or ignored; one that does not fit is an error before any compile."""

import glob
import logging
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxseg.runtime.checkpointing import Checkpointer, CheckpointMismatchError
from jaxseg.runtime.preemption import PreemptionGuard
from jaxseg.train import train_and_evaluate

_DEVICE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _state(step):
    return {"w": np.full((4, 3), step, np.float32), "b": np.arange(3, dtype=np.float32) * step}


def _abstract(shape=(4, 3)):
    return {
        "w": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=_DEVICE),
        "b": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=_DEVICE),
    }


def _save_steps(directory, steps=(1, 2, 3)):
    checkpointer = Checkpointer(str(directory))
    for step in steps:
        checkpointer.save(step, _state(step), None)
    checkpointer.close()


def _truncate(pattern):
    def damage(step_dir):
        files = [p for p in glob.glob(os.path.join(step_dir, pattern), recursive=True)]
        assert files, pattern
        for path in files:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)

    return damage


def _remove(name):
    def damage(step_dir):
        path = os.path.join(step_dir, name)
        if os.path.isdir(path):
            import shutil

            shutil.rmtree(path)
        else:
            os.remove(path)

    return damage


DAMAGE = {
    "truncated arrays": _truncate("state/**/d/*"),
    "truncated array manifest": _truncate("state/**/manifest.ocdbt"),
    "no state metadata": _remove("state/_METADATA"),
    "truncated state metadata": _truncate("state/_METADATA"),
    "no commit marker": _remove("commit_success.txt"),
    "no state item": _remove("state"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path, damage, caplog):
    directory = tmp_path / "checkpoints"
    _save_steps(directory)
    DAMAGE[damage](str(directory / "3"))
    checkpointer = Checkpointer(str(directory))
    with caplog.at_level(logging.ERROR):
        state, step = checkpointer.restore_latest(_abstract())
    checkpointer.close()
    assert step == 2
    np.testing.assert_array_equal(state["w"], _state(2)["w"])
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"{directory / '3'} is not usable" in message and "moved to" in message
    assert "3" not in os.listdir(directory)
    assert os.listdir(f"{directory}.corrupt")[0].startswith("3-")


def test_nan_in_a_checkpoint_makes_it_unusable(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, (1,))
    # Written behind the Checkpointer's back (it refuses to save NaN itself).
    manager = ocp.CheckpointManager(str(directory), item_names=("state",))
    bad = dict(_state(2), b=np.array([0, np.nan, 0], np.float32))
    manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(bad)))
    manager.close()
    checkpointer = Checkpointer(str(directory))
    state, step = checkpointer.restore_latest(_abstract())
    checkpointer.close()
    assert step == 1 and np.all(np.isfinite(state["b"]))


def test_no_usable_checkpoint_means_a_fresh_start(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, (1,))
    _remove("state/_METADATA")(str(directory / "1"))
    checkpointer = Checkpointer(str(directory))
    assert checkpointer.restore_latest(_abstract()) == (None, None)
    checkpointer.close()


def test_a_save_cut_short_is_invisible_and_cleaned_up(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, (1,))
    leftover = directory / "2.orbax-checkpoint-tmp"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "_METADATA").write_text("{")
    checkpointer = Checkpointer(str(directory))  # also starts removing the leftover
    assert checkpointer.all_steps() == [1]
    assert checkpointer.restore_latest(_abstract())[1] == 1
    checkpointer.save(2, _state(2), None)  # the same step saved again, over the leftover
    checkpointer.wait()
    state, step = checkpointer.restore_latest(_abstract())
    checkpointer.close()
    assert step == 2
    np.testing.assert_array_equal(state["w"], _state(2)["w"])


def test_other_shapes_are_an_error_not_a_fallback(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, (1, 2))
    checkpointer = Checkpointer(str(directory))
    with pytest.raises(CheckpointMismatchError, match=r"w: checkpoint \(4, 3\), model \(5, 3\)"):
        checkpointer.restore_latest(_abstract((5, 3)))
    checkpointer.close()
    assert sorted(os.listdir(directory)) == ["1", "2"]  # nothing moved


def test_other_arrays_are_an_error_not_a_fallback(tmp_path):
    """A checkpoint of another model or jaxseg version is not damaged: never moved aside."""
    directory = tmp_path / "checkpoints"
    checkpointer = Checkpointer(str(directory))
    checkpointer.save(1, dict(_state(1), extra=np.zeros(2, np.float32)), None)
    checkpointer.close()
    checkpointer = Checkpointer(str(directory))
    with pytest.raises(
        CheckpointMismatchError, match=r"other arrays .*not in the model \['extra'\]"
    ):
        checkpointer.restore_latest(_abstract())
    checkpointer.close()
    assert os.listdir(directory) == ["1"]


def test_preemption_guard_records_sigterm_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.requested
        signal.raise_signal(signal.SIGTERM)  # would end the test run without the guard
        assert guard.requested and guard.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_resuming_with_another_model_is_refused_before_compiling(tiny_config, tmp_path):
    tiny_config.num_train_steps = 2
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config, workdir)

    compiles = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            compiles.append(event)

    wider = tiny_config.copy_and_resolve_references()
    wider.model.width = 0.0625
    wider.num_train_steps = 4
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(ValueError, match=r"(?s)different config.*config.model.width: 0.03125"):
            train_and_evaluate(wider, workdir)
        with pytest.raises(CheckpointMismatchError, match="does not fit the model"):
            train_and_evaluate(wider, workdir, allow_config_change=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, compiles
    longer = tiny_config.copy_and_resolve_references()
    longer.num_train_steps = 3  # the run length may change
    longer.eval_every_steps = 3
    train_and_evaluate(longer, workdir)
    assert Checkpointer(os.path.join(workdir, "checkpoints"), create=False).latest_step() == 3
