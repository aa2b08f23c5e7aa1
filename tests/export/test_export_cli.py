"""python -m jaxseg.export on a converted folder, and its one-line errors."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from tiny_predictors import drawn_variables

import jaxseg.export
from jaxseg.convert import VOC_CATEGORIES, Conversion, save_converted
from jaxseg.export import METADATA_FILE
from jaxseg.models import FCNResNet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _export(*args):
    path = os.environ.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "jaxseg.export", *args],
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([ROOT, path])},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted FCN-ResNet50 folder (1/8 width) with torchvision's rule at 48 px."""
    directory = tmp_path_factory.mktemp("cli") / "converted"
    model = FCNResNet(depth=50, width=0.125, num_classes=21)
    conversion = Conversion(
        "fcn_resnet50", model, {"width": 0.125, "num_classes": 21}, drawn_variables(model), {}, ()
    )
    save_converted(directory, conversion)
    path = directory / "jaxseg_convert.json"
    metadata = json.loads(path.read_text())
    metadata["preprocessing"]["resize_size"] = 48  # torchvision's: 520
    path.write_text(json.dumps(metadata))
    return directory


def test_export_of_a_converted_folder(converted):
    out = converted.parent / "export"
    result = _export("--workdir", str(converted), "--output", str(out), "--batch", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "canvas 48x48, batch 2" in result.stdout
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["canvas"] == [48, 48]  # the rule's 48 px (an FCN takes any size)
    assert metadata["classes"] == list(VOC_CATEGORIES) and metadata["task"] == "semantic"
    assert metadata["source"]["step"] == 0 and metadata["source"]["arch"] == "fcn_resnet50"
    assert metadata["source"]["checkpoint"] == os.path.join(str(converted), "checkpoints", "0")
    assert metadata["preprocessing"]["resize_size"] == 48
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    (result,) = jaxseg.export.load(out)([image])
    assert result["classes"].shape == (30, 45)
    assert result["input_size"] == (32, 48)  # the rule's 48 x 72, shrunk to fit
    assert result["classes"].max() < 21


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workdir", "{tmp}/nowhere"], r"--workdir .*nowhere: no such directory"),
        (["--canvas", "0x64"], r"--canvas = 0x64: each side must be at least 1 pixel"),
        (["--canvas", "64by64"], r"--canvas = '64by64': give HEIGHTxWIDTH"),
        (["--batch", "0"], r"--batch must be >= 1, got 0"),
        (["--output", "{converted}"], r"--output .*converted is not empty and holds no export"),
    ],
)
def test_mistakes_are_one_line(converted, tmp_path, args, message):
    defaults = {"--workdir": str(converted), "--output": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        defaults[flag] = value.format(tmp=tmp_path, converted=converted)
    result = _export(*[item for pair in defaults.items() for item in pair])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("python -m jaxseg.export: error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()
