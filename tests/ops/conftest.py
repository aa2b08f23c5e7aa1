"""Fixtures shared by the ops tests."""

import numpy as np
import pytest


@pytest.fixture
def seed_map():
    """[4, 4] float32: the feature map of the project's notes on RoIPool vs RoIAlign."""
    return np.array(
        [
            [0.3, 0.4, 0.2, 0.1],
            [0.5, 0.1, 0.9, 0.7],
            [0.3, 0.6, 0.2, 0.2],
            [0.1, 0.7, 0.9, 0.1],
        ],
        np.float32,
    )
