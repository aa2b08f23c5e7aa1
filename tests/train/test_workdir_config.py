"""A workdir keeps the config it was started with; only run length, logging and paths may change."""

import json
import logging

import pytest

from jaxseg.train.config import base_config
from jaxseg.train.workdir_config import check_workdir_config, write_workdir_config


@pytest.fixture
def started(tmp_path):
    """A workdir started with the base config."""
    write_workdir_config(base_config(), str(tmp_path))
    return str(tmp_path)


def test_same_config_and_new_workdir_are_accepted(started, tmp_path):
    check_workdir_config(base_config(), started)
    check_workdir_config(base_config(), str(tmp_path / "new"))


def test_run_length_logging_and_paths_may_change(started):
    config = base_config()
    config.num_train_steps *= 2
    config.eval_every_steps = 7
    config.dataset.data_dir = "/elsewhere"
    config.eval.batch_size = 3
    check_workdir_config(config, started)


def test_other_changes_are_refused_with_every_key_named(started):
    config = base_config()
    config.model.name = "fcn32s"
    config.optimizer.learning_rate = 0.5
    config.seed = 1
    config.num_train_steps = 7  # allowed, so not named
    with pytest.raises(ValueError, match=r"different config") as error:
        check_workdir_config(config, started)
    message = str(error.value)
    for line in (
        "config.model.name: 'fcn8s' in the workdir, 'fcn32s' now",
        "config.optimizer.learning_rate: 0.01 in the workdir, 0.5 now",
        "config.seed: 0 in the workdir, 1 now",
        "--allow_config_change",
    ):
        assert line in message, message
    assert "num_train_steps" not in message


def test_added_model_settings_count_as_changes(started):
    config = base_config()
    config.model.width = 0.5
    with pytest.raises(ValueError, match=r"config.model.width: '<absent>' in the workdir, 0.5"):
        check_workdir_config(config, started)


def test_keys_added_by_a_newer_jaxseg_at_their_default_are_no_change(tmp_path):
    old = base_config().to_dict()
    del old["dtype"]  # as if the workdir was started before `dtype` existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_workdir_config(base_config(), str(tmp_path))
    config = base_config()
    config.dtype = "bfloat16"
    with pytest.raises(ValueError, match=r"config.dtype: '<absent>' in the workdir, 'bfloat16'"):
        check_workdir_config(config, str(tmp_path))


def test_override_accepts_and_logs(started, caplog):
    config = base_config()
    config.batch_size = 4
    with caplog.at_level(logging.WARNING):
        check_workdir_config(config, started, allow_change=True)
    assert "resuming with a changed config (batch_size)" in caplog.text


def test_unreadable_config_json_is_not_an_obstacle(tmp_path, caplog):
    (tmp_path / "config.json").write_text('{"seed": ')  # a kill while an old jaxseg wrote it
    with caplog.at_level(logging.WARNING):
        check_workdir_config(base_config(), str(tmp_path))
    assert "not comparing configs" in caplog.text
    write_workdir_config(base_config(), str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left
