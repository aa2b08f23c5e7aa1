"""Every shipped config passes the checks and builds its model (no data, no compile)."""

import glob
import importlib.util
import os

import pytest

from jaxseg.config import check_config, model_settings
from jaxseg.models import build_model

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "*.py")))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_configs_are_found():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"fcn32s_shapes.py", "fcn16s_shapes.py", "fcn8s_shapes.py"} <= names
    assert {"fcn8s_voc.py", "fcn_resnet50_voc.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_is_valid_and_documented(path):
    module = _load(path)
    assert "python train.py --config configs/" in module.__doc__
    config = module.get_config()
    check_config(config)
    build_model(
        config.model.name,
        num_classes=5,
        **{k: v for k, v in model_settings(config).items() if k != "num_classes"},
    )
