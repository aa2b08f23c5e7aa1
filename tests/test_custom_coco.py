"""Your own COCO-format data: an annotation JSON and an image folder, named in the config.

config.dataset.name = "coco"
config.dataset.annotations = {"train": ".../train.json", "validation": ".../val.json"}
config.dataset.images = ".../images"
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxseg.config import base_config
from jaxseg.data import CocoFormatConfig
from jaxseg.tasks.base import dataset_kwargs
from jaxseg.testing import TINY_MASK_RCNN_WIDTHS, model_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_folder(root, names, *, count=6, seed=0):
    """Writes root/train.json, root/val.json and root/images (64 px scenes of squares)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    data = {"images": [], "annotations": [], "categories": []}
    data["categories"] = [dict(id=10 * (k + 1), name=n) for k, n in enumerate(names)]
    for image_id in range(1, count + 1):
        image = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
        for k in range(2):
            x, y = (int(v) for v in rng.integers(4, 40, 2))
            image[y : y + 20, x : x + 20] = 200 if k == 0 else 120
            square = [x, y, x + 20, y, x + 20, y + 20, x, y + 20]
            data["annotations"].append(
                dict(
                    id=len(data["annotations"]) + 1,
                    image_id=image_id,
                    category_id=data["categories"][k % len(names)]["id"],
                    segmentation=[square],
                    bbox=[x, y, 20, 20],
                    area=400,
                    iscrowd=0,
                )
            )
        Image.fromarray(image).save(root / "images" / f"{image_id:04d}.jpg")
        data["images"].append(
            dict(id=image_id, file_name=f"{image_id:04d}.jpg", height=64, width=64)
        )
    (root / "train.json").write_text(json.dumps(data))
    val_ids = {1, 2}
    val = dict(
        data,
        images=[i for i in data["images"] if i["id"] in val_ids],
        annotations=[a for a in data["annotations"] if a["image_id"] in val_ids],
    )
    (root / "val.json").write_text(json.dumps(val))
    return root


def _dataset(root, **extra):
    config = base_config()
    config.dataset.name = "coco"
    config.dataset.annotations = {
        "train": str(root / "train.json"),
        "validation": str(root / "val.json"),
    }
    config.dataset.images = str(root / "images")
    for key, value in extra.items():
        config.dataset[key] = value
    return config.dataset


def test_annotations_and_images_become_a_content_named_coco_config(tmp_path):
    a = write_folder(tmp_path / "a", ("cat", "dog"))
    b = write_folder(tmp_path / "b", ("cat", "dog"), seed=1)
    config_a = dataset_kwargs(_dataset(a))["config"]
    config_b = dataset_kwargs(_dataset(b, config="2017"))["config"]  # the name is replaced
    assert isinstance(config_a, CocoFormatConfig)
    assert config_a.name != config_b.name  # two folders never share a build
    assert config_a.splits["train"] == (str(a / "train.json"), str(a / "images"))
    relative = _dataset(a, manual_dir=str(a))
    relative.annotations = {"train": "train.json", "validation": "val.json"}
    relative.images = "images"
    assert dataset_kwargs(relative)["config"].name == config_a.name


def test_custom_data_settings_that_contradict_are_refused(tmp_path):
    a = write_folder(tmp_path / "a", ("cat",))
    with pytest.raises(ValueError, match=r"config.dataset.name = 'coco'\), but .* 'jaxseg_shapes'"):
        dataset_kwargs(_dataset(a, name="jaxseg_shapes"))
    with pytest.raises(ValueError, match=r"eval_split = 'val', but config\.dataset\.annotations"):
        dataset_kwargs(_dataset(a, eval_split="val"))
    config = base_config()
    config.dataset.images = str(a / "images")
    with pytest.raises(ValueError, match="names no annotation file"):
        dataset_kwargs(config.dataset)
    both = _dataset(a)
    both.config = CocoFormatConfig(name="x", splits={"train": ("t.json", "images")})
    with pytest.raises(ValueError, match="give only one"):
        dataset_kwargs(both)


def test_a_builder_config_object_in_the_config_is_passed_to_the_builder(tmp_path):
    config = base_config()
    coco = CocoFormatConfig(name="mine", splits={"train": ("t.json", "images")})
    config.dataset.config = coco  # a TypeError before: the key only took strings
    assert dataset_kwargs(config.dataset)["config"] is coco
    assert json.loads(config.to_json_best_effort())["dataset"]["config"]["name"] == "mine"


def _train(config_file, workdir, overrides, tmp_path, *, check=True):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("JAXSEG_COMPILATION_CACHE", None)
    command = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config",
        str(config_file),
        "--workdir",
        str(workdir),
        f"--config.compilation_cache_dir={tmp_path / 'xla'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        *model_flags(TINY_MASK_RCNN_WIDTHS),
        "--config.dataset.mask_size=28",
        "--config.batch_size=2",
        "--config.num_train_steps=2",
        "--config.optimizer.warmup_steps=0",  # the config's 50 is longer than this run
        "--config.log_every_steps=1",
        "--config.eval_every_steps=2",
        "--config.checkpoint_every_steps=2",
        "--config.eval.batch_size=2",
        "--config.eval.num_pictures=0",
        *overrides,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_train_on_two_custom_coco_folders(tmp_path):
    mine = write_folder(tmp_path / "mine", ("apple", "pear"))
    theirs = write_folder(tmp_path / "theirs", ("car", "bus", "bike"), seed=1)
    # The three-line config file of README.md, on top of the CPU-sized Mask R-CNN config.
    config_file = tmp_path / "my_config.py"
    base = os.path.join(ROOT, "configs", "mask_rcnn_shapes.py")
    config_file.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('base', {base!r})\n"
        "base = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(base)\n\n"
        "def get_config():\n"
        "    config = base.get_config()\n"
        "    config.dataset.name = 'coco'\n"
        f"    config.dataset.annotations = {{'train': {str(mine / 'train.json')!r}, "
        f"'validation': {str(mine / 'val.json')!r}}}\n"
        f"    config.dataset.images = {str(mine / 'images')!r}\n"
        "    return config\n"
    )
    _train(config_file, tmp_path / "run_mine", [], tmp_path)
    metrics = [json.loads(line) for line in open(tmp_path / "run_mine" / "metrics.jsonl")]
    assert [m["step"] for m in metrics if m["split"] == "eval"] == [2]
    assert np.isfinite([m["loss"] for m in metrics if m["split"] == "train"]).all()
    source = json.loads((tmp_path / "run_mine" / "dataset_source.json").read_text())
    assert source["paths"]["train annotations"] == str(mine / "train.json")

    # The other folder from the command line, into the same data dir: its own build.
    flags = [
        f"--config.dataset.annotations.train={theirs / 'train.json'}",
        f"--config.dataset.annotations.validation={theirs / 'val.json'}",
        f"--config.dataset.images={theirs / 'images'}",
    ]
    _train(config_file, tmp_path / "run_theirs", flags, tmp_path)
    builds = sorted(b for b in os.listdir(tmp_path / "tfds" / "jaxseg_coco") if b[0] != ".")
    assert len(builds) == 2 and all(b.startswith("custom_") for b in builds), builds
    names = set()
    for build in builds:
        (version,) = os.listdir(tmp_path / "tfds" / "jaxseg_coco" / build)
        metadata = tmp_path / "tfds" / "jaxseg_coco" / build / version / "metadata.json"
        names.add(tuple(json.loads(metadata.read_text())["instance_class_names"]))
    assert names == {("apple", "pear"), ("car", "bus", "bike")}

    # The first workdir on the other folder: refused before training, both sources named.
    refused = _train(config_file, tmp_path / "run_mine", flags, tmp_path, check=False)
    assert refused.returncode != 0
    assert "trained on other data" in refused.stderr, refused.stderr[-3000:]
    assert (
        str(mine / "train.json") in refused.stderr and str(theirs / "train.json") in refused.stderr
    )
