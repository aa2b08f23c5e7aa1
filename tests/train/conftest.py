"""Fixtures of the training tests: the small shapes dataset in a temp dir, a tiny config."""

import pytest

from jaxseg.config import base_config


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
    """A TFDS data dir holding `jaxseg_shapes/small` (built in a few seconds)."""
    from jaxseg.data import catalog

    data_dir = tmp_path_factory.mktemp("tfds")
    catalog.load_builder("jaxseg_shapes", data_dir=data_dir, config="small")
    return str(data_dir)


def make_tiny_config(data_dir: str, model: str = "fcn8s"):
    """Returns a config that trains a very narrow `model` on 32 px crops in seconds."""
    config = base_config()
    config.model.name = model
    config.model.width = 0.03125
    config.model.dropout_rate = 0.0
    config.dataset.config = "small"
    config.dataset.data_dir = data_dir
    config.dataset.image_size = 32
    config.dataset.eval_image_size = 64
    config.dataset.eval_split = "validation[:8]"
    config.dataset.scale_range = (1.0, 1.0)
    config.batch_size = 4
    config.num_train_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 1
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.eval.batch_size = 4
    config.eval.num_pictures = 2
    config.eval.summary_pictures = 0  # one test turns them on (tests/train/test_seams.py)
    config.compilation_cache_dir = ""
    return config


@pytest.fixture
def tiny_config(shapes_data_dir):
    """A fresh tiny FCN-8s config on the small shapes dataset."""
    return make_tiny_config(shapes_data_dir)
