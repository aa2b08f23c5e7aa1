"""A prepared build is used only for the source it was built from (jaxseg.data.sources)."""

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import CocoFormatConfig, ShapesConfig, catalog, dataset_info
from jaxseg.data.coco_builder import custom_config
from jaxseg.data.sources import SourceChangedError


def write_coco(root, names=("cat", "dog"), count=2):
    """Writes root/train.json, root/val.json and root/images; returns root."""
    images = root / "images"
    images.mkdir(parents=True)
    square = [4, 4, 14, 4, 14, 14, 4, 14]
    data = {"images": [], "annotations": [], "categories": []}
    for k, name in enumerate(names):
        data["categories"].append(dict(id=k + 1, name=name))
    for image_id in range(1, count + 1):
        Image.fromarray(np.full((20, 24, 3), 30 * image_id, np.uint8)).save(
            images / f"{image_id}.png"
        )
        data["images"].append(dict(id=image_id, file_name=f"{image_id}.png", height=20, width=24))
        data["annotations"].append(
            dict(id=image_id, image_id=image_id, category_id=1, segmentation=[square])
        )
    (root / "train.json").write_text(json.dumps(data))
    (root / "val.json").write_text(json.dumps(dict(data, images=data["images"][:1])))
    return root


def _named(name="mine"):
    return CocoFormatConfig(
        name=name, splits={"train": ("train.json", "images"), "validation": ("val.json", "images")}
    )


def test_a_named_build_refuses_another_manual_dir(tmp_path):
    first = write_coco(tmp_path / "first")
    other = write_coco(tmp_path / "other", names=("zebra", "horse"))
    data_dir = tmp_path / "tfds"
    _, builder = catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=first)
    recorded = builder.info.metadata["source"]
    assert recorded["paths"]["train annotations"] == str(first / "train.json")
    assert recorded["fingerprints"]["train annotations"].startswith("sha256:")
    with pytest.raises(SourceChangedError) as error:
        dataset_info("coco", data_dir=data_dir, config=_named(), manual_dir=other)
    message = str(error.value)
    for part in (
        str(first / "train.json"),  # both sources named
        str(other / "train.json"),
        "train annotations: sha256:",
        f"delete (or move away) {builder.data_dir}",
    ):
        assert part in message, message
    assert "images" not in message.split("Built from")[0]  # the image folders are alike
    # Nothing was deleted: the first source's build still reads.
    info = dataset_info("coco", data_dir=data_dir, config=_named(), manual_dir=first)
    assert info.class_names == ("cat", "dog")


def test_an_edited_annotation_file_is_refused_and_moved_data_is_not(tmp_path):
    root = write_coco(tmp_path / "data")
    data_dir = tmp_path / "tfds"
    catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=root)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)  # same content, new path and times: the same source
    catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=moved)
    data = json.loads((root / "val.json").read_text())
    data["categories"][1]["name"] = "wolf"
    (root / "val.json").write_text(json.dumps(data))
    with pytest.raises(SourceChangedError, match=r"validation annotations: sha256:"):
        catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=root)
    (root / "images" / "3.png").write_bytes((root / "images" / "1.png").read_bytes())
    with pytest.raises(SourceChangedError, match=r"train images: 2 files, .* -> 3 files"):
        catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=root)


def test_a_build_whose_source_is_gone_is_used_with_a_warning(tmp_path, caplog):
    root = write_coco(tmp_path / "data")
    data_dir = tmp_path / "tfds"
    catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=root)
    shutil.rmtree(root)
    with caplog.at_level(logging.WARNING):
        info = dataset_info("coco", data_dir=data_dir, config=_named(), manual_dir=root)
    assert info.class_names == ("cat", "dog")
    assert "cannot read the source given to check the build" in caplog.text
    assert str(root / "train.json") in caplog.text


def test_custom_sources_get_their_own_builds(tmp_path):
    first = write_coco(tmp_path / "first")
    other = write_coco(tmp_path / "other", names=("zebra", "horse", "emu"))
    data_dir = tmp_path / "tfds"

    def config(root):
        return custom_config(
            {"train": str(root / "train.json"), "validation": str(root / "val.json")},
            images=str(root / "images"),
        )

    a, b = config(first), config(other)
    assert a.name != b.name and a.name.startswith("custom_")
    assert dataset_info("coco", data_dir=data_dir, config=a).class_names == ("cat", "dog")
    assert dataset_info("coco", data_dir=data_dir, config=b).class_names == (
        "zebra",
        "horse",
        "emu",
    )
    # An edited JSON is a new build; the old one stays.
    data = json.loads((first / "train.json").read_text())
    data["categories"][0]["name"] = "lion"
    (first / "train.json").write_text(json.dumps(data))
    (first / "val.json").write_text(json.dumps(dict(data, images=data["images"][:1])))
    edited = config(first)
    assert edited.name not in (a.name, b.name)
    assert dataset_info("coco", data_dir=data_dir, config=edited).class_names == ("lion", "dog")
    assert (data_dir / "jaxseg_coco" / a.name).is_dir()
    # Relative paths are relative to manual_dir; the same content is the same build.
    relative = custom_config({"train": "train.json", "validation": "val.json"}, images="images",
                             manual_dir=other)  # fmt: skip
    assert relative.name == b.name


def test_custom_config_errors_name_what_is_missing(tmp_path):
    root = write_coco(tmp_path / "data")
    with pytest.raises(ValueError, match="no annotation file given"):
        custom_config({"train": ""}, images=str(root / "images"))
    with pytest.raises(ValueError, match=r"no image folder for split\(s\) \['validation'\]"):
        custom_config(
            {"train": str(root / "train.json"), "validation": str(root / "val.json")},
            images={"train": str(root / "images")},
        )
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        custom_config({"train": str(root / "nope.json")}, images=str(root / "images"))


def test_shapes_settings_under_one_name_are_refused(tmp_path):
    config = ShapesConfig(name="tiny_src", image_size=32, num_train=3, num_validation=2,
                          num_test=0, seed=1)  # fmt: skip
    catalog.load_builder("jaxseg_shapes", data_dir=tmp_path, config=config)
    catalog.load_builder("jaxseg_shapes", data_dir=tmp_path, config=config)  # the same: reused
    other = ShapesConfig(name="tiny_src", image_size=32, num_train=3, num_validation=2,
                         num_test=0, seed=2)  # fmt: skip
    with pytest.raises(
        SourceChangedError, match=r'generator settings: .*"seed": 1.* -> .*"seed": 2'
    ):
        catalog.load_builder("jaxseg_shapes", data_dir=tmp_path, config=other)


def test_a_build_from_before_sources_were_recorded_warns(tmp_path, caplog):
    root = write_coco(tmp_path / "data")
    data_dir = tmp_path / "tfds"
    _, builder = catalog.load_builder("coco", data_dir=data_dir, config=_named(), manual_dir=root)
    metadata = builder.data_path / "metadata.json"
    content = json.loads(metadata.read_text())
    del content["source"]
    metadata.write_text(json.dumps(content))
    with caplog.at_level(logging.WARNING):
        info = dataset_info("coco", data_dir=data_dir, config=_named(), manual_dir=root)
    assert info.class_names == ("cat", "dog")
    assert "did not record its source" in caplog.text and "Delete" in caplog.text


def test_a_config_of_another_builder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="takes a CocoFormatConfig as config, got ShapesConfig"):
        catalog.load_builder("coco", data_dir=tmp_path, config=ShapesConfig(name="x"))
