"""Fixtures shared by the data tests: a tiny generated shapes dataset in a temp data dir."""

import pytest

from jaxseg.data import ShapesConfig

# Small enough to build in well under a second.
TINY_SHAPES = ShapesConfig(
    name="tiny_test",
    image_size=48,
    num_train=24,
    num_validation=11,
    num_test=4,
    max_objects=5,
    seed=3,
)


@pytest.fixture(scope="session")
def tiny_shapes():
    """The ShapesConfig of the tiny test dataset built in `shapes_dir`."""
    return TINY_SHAPES


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A TFDS data dir holding the built TINY_SHAPES config of jaxseg_shapes."""
    from jaxseg.data import catalog

    data_dir = tmp_path_factory.mktemp("tfds")
    catalog.load_builder("jaxseg_shapes", data_dir=data_dir, config=TINY_SHAPES)
    return data_dir
