"""A workdir keeps the config it was started with; only run length, logging and paths may change."""

import json
import logging

import pytest

from jaxseg.config import base_config
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
    # No temporary left (dataset_source.json appears where the default shapes data is built).
    assert {p.name for p in tmp_path.iterdir()} <= {"config.json", "dataset_source.json"}


def _coco_config(root, data_dir):
    """A config reading the COCO-format folder `root` (written by write_coco), built."""
    from jaxseg.data import catalog
    from jaxseg.tasks.base import dataset_kwargs

    config = base_config()
    config.dataset.name = "coco"
    config.dataset.annotations = {
        "train": str(root / "train.json"),
        "validation": str(root / "val.json"),
    }
    config.dataset.images = str(root / "images")
    config.dataset.data_dir = str(data_dir)
    catalog.load_builder("coco", **dataset_kwargs(config.dataset))
    return config


def test_a_workdir_refuses_other_data_and_names_both_sources(tmp_path, caplog):
    import shutil

    from tests.data.test_sources import write_coco

    first = write_coco(tmp_path / "first")
    other = write_coco(tmp_path / "other", names=("zebra", "horse"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_workdir_config(_coco_config(first, tmp_path / "tfds"), str(workdir))
    saved = json.loads((workdir / "dataset_source.json").read_text())
    assert saved["paths"]["train annotations"] == str(first / "train.json")
    # The same data moved elsewhere is no change (the paths are not compared).
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    check_workdir_config(_coco_config(moved, tmp_path / "tfds"), str(workdir))
    changed = _coco_config(other, tmp_path / "tfds")
    with pytest.raises(ValueError, match="trained on other data") as error:
        check_workdir_config(changed, str(workdir))
    message = str(error.value)
    for part in (str(first / "train.json"), str(other / "train.json"), "--allow_config_change"):
        assert part in message, message
    with caplog.at_level(logging.WARNING):
        check_workdir_config(changed, str(workdir), allow_change=True)
    assert "resuming on other data" in caplog.text


def test_an_edited_annotation_file_is_other_data_for_the_workdir(tmp_path):
    from tests.data.test_sources import write_coco

    root = write_coco(tmp_path / "data")
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_workdir_config(_coco_config(root, tmp_path / "tfds"), str(workdir))
    data = json.loads((root / "train.json").read_text())
    data["annotations"] = data["annotations"][:1]
    (root / "train.json").write_text(json.dumps(data))
    config = _coco_config(root, tmp_path / "tfds")  # a fresh build of the edited file
    with pytest.raises(ValueError, match=r"train annotations: sha256:\w+ \(.*train.json\) ->"):
        check_workdir_config(config, str(workdir))
