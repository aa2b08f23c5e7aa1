"""Bad input is refused with a clear error before anything is compiled."""

import os

import jax
import pytest

from jaxseg.config import check_config, check_workdir
from jaxseg.runtime.checkpointing import check_compatible
from jaxseg.train import train_and_evaluate


@pytest.fixture
def no_compile():
    """Fails the test if XLA compiles anything while it runs."""
    compiles = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield
    jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, f"compiled before refusing the input: {compiles}"


def test_unknown_top_level_key_suggests_the_known_one(tiny_config, tmp_path, no_compile):
    tiny_config.num_train_step = 10
    with pytest.raises(ValueError, match=r"num_train_step \(did you mean num_train_steps\?\)"):
        train_and_evaluate(tiny_config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_unknown_nested_key(tiny_config, no_compile):
    tiny_config.optimizer.lr = 0.1
    with pytest.raises(ValueError, match=r"optimizer\.lr"):
        check_config(tiny_config)


def test_unknown_model_setting(tiny_config, tmp_path, no_compile):
    tiny_config.model.widht = 0.5
    with pytest.raises(ValueError, match="widht"):
        train_and_evaluate(tiny_config, str(tmp_path))


def test_num_classes_differing_from_the_dataset(tiny_config, tmp_path, no_compile):
    tiny_config.model.num_classes = 21
    with pytest.raises(ValueError, match=r"num_classes = 21 but dataset .* has 5 classes"):
        train_and_evaluate(tiny_config, str(tmp_path))


@pytest.mark.parametrize("key", ["image_size", "eval_image_size"])
def test_image_below_the_model_minimum(tiny_config, tmp_path, no_compile, key):
    tiny_config.dataset[key] = 0
    with pytest.raises(ValueError, match=rf"dataset\.{key} = 0 is below the smallest input"):
        train_and_evaluate(tiny_config, str(tmp_path))


def test_image_below_a_given_minimum(tiny_config):
    with pytest.raises(ValueError, match=r"image_size = 32 is below .* \(33x33 pixels\)"):
        check_config(tiny_config, min_image_size=33)


def test_unwritable_workdir(tiny_config, tmp_path, no_compile):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="is not writable"):
        train_and_evaluate(tiny_config, str(blocker / "run"))
    with pytest.raises(ValueError, match="is not a directory"):
        check_workdir(blocker)


def test_bad_values(tiny_config):
    tiny_config.optimizer.schedule = "exponential"
    with pytest.raises(ValueError, match="schedule must be one of"):
        check_config(tiny_config)


def test_checkpoint_shapes_are_compared_per_leaf():
    model = {"params": {"score_fr": {"kernel": jax.ShapeDtypeStruct((1, 1, 8, 21), "float32")}}}
    saved = {"params": {"score_fr": {"kernel": jax.numpy.zeros((1, 1, 8, 5))}}}
    with pytest.raises(ValueError, match=r"score_fr/kernel: checkpoint \(1, 1, 8, 5\), model"):
        check_compatible(model, saved, what="checkpoint x")
    check_compatible(model, {"params": {}}, what="a checkpoint without the leaf")
