"""The adapters read TFDS catalogue datasets from their prepared files.

Building the real datasets needs downloads (and, for most, TensorFlow), so each test
writes a small array_record dataset with the catalogue dataset's name, version and
feature spec (taken from TFDS's own builder where that works without TensorFlow),
then reads it through the jaxseg loaders exactly as a prepared copy would be read.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.data import dataset_info, make_instance_loader, make_semantic_loader
from jaxseg.data.adapters import CITYSCAPES_LABEL_TO_TRAIN_ID
from jaxseg.data.tfds_compat import Builder


def _write(data_dir, name, version, features, examples, config=None):
    """Writes `examples` as split 'train' of a dataset that reads as `name[/config]`."""

    class Fake(Builder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config, version=version)] if config else []

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from enumerate(examples)

    Fake.name = name
    Fake(data_dir=data_dir, config=config).download_and_prepare()


def _png(array):
    return Image.fromarray(array)  # TFDS encodes PIL images without TensorFlow


def test_oxford_iiit_pet_trimap(tmp_path):
    features = tfds.builder("oxford_iiit_pet", data_dir=tmp_path).info.features
    trimap = np.full((20, 24, 1), 2, np.uint8)
    trimap[5:15, 5:15] = 3
    trimap[7:13, 7:13] = 1
    example = {
        "file_name": "Abyssinian_1.jpg", "head_bbox": tfds.features.BBox(0.1, 0.1, 0.5, 0.5),
        "image": _png(np.zeros((20, 24, 3), np.uint8)), "label": 0,
        "segmentation_mask": _png(trimap[..., 0]), "species": 0,
    }  # fmt: skip
    _write(tmp_path, "oxford_iiit_pet", "4.0.0", features, [example, example])
    loader = make_semantic_loader(
        "oxford_iiit_pet", "train", batch_size=2, image_size=32, train=False, seed=0,
        data_dir=tmp_path,
    )  # fmt: skip
    label = next(iter(loader))["label"][0]
    assert (label[7:13, 7:13] == 1).all()  # pet
    assert label[5, 5] == 255 and label[0, 0] == 0  # border ignored, background 0
    assert dataset_info("oxford_iiit_pet").class_names == ("background", "pet")


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    features = tfds.builder("cityscapes/semantic_segmentation", data_dir=tmp_path).info.features
    label_ids = np.arange(40, dtype=np.uint8).reshape(5, 8)
    example = {
        "image_id": "aachen_000000_000019", "image_left": _png(np.zeros((5, 8, 3), np.uint8)),
        "segmentation_label": _png(label_ids),
    }  # fmt: skip
    _write(tmp_path, "cityscapes", "1.0.0", features, [example], config="semantic_segmentation")
    loader = make_semantic_loader(
        "cityscapes", "train", batch_size=1, image_size=(8, 8), train=False, seed=0,
        data_dir=tmp_path,
    )  # fmt: skip
    label = next(iter(loader))["label"][0, :5]
    np.testing.assert_array_equal(label, CITYSCAPES_LABEL_TO_TRAIN_ID[label_ids])
    assert label.reshape(-1)[7] == 0 and label.reshape(-1)[33] == 18  # road, bicycle
    assert label.reshape(-1)[6] == 255 and label.reshape(-1)[34] == 255
    assert dataset_info("cityscapes").num_classes == 19


def test_lvis_instances(tmp_path):
    features = tfds.builder("lvis", data_dir=tmp_path).info.features
    mask = np.zeros((20, 40), np.uint8)
    mask[5:10, 10:30] = 1
    example = {
        "image": _png(np.zeros((20, 40, 3), np.uint8)), "image/id": 77,
        "neg_category_ids": [], "not_exhaustive_category_ids": [],
        "objects": [{
            "area": 100, "bbox": tfds.features.BBox(0.25, 0.25, 0.5, 0.75), "id": 1,
            "label": 4, "segmentation": _png(mask),
        }],
    }  # fmt: skip
    _write(tmp_path, "lvis", "1.4.0", features, [example])
    loader = make_instance_loader(
        "lvis", "train", batch_size=1, image_size=(20, 40), max_instances=3, train=False,
        seed=0, data_dir=tmp_path, mask_format="canvas",
    )  # fmt: skip
    batch = next(iter(loader))
    assert batch["image_id"].tolist() == [77]
    assert batch["classes"][0].tolist() == [5, 0, 0]
    np.testing.assert_allclose(batch["boxes"][0, 0], [10, 5, 30, 10])
    np.testing.assert_array_equal(batch["masks"][0, 0], mask)
    assert dataset_info("lvis", data_dir=tmp_path).num_classes == 1203


def test_coco_panoptic_things(tmp_path):
    features = {
        "image": tfds.features.Image(encoding_format="jpeg"),
        "image/filename": tfds.features.Text(),
        "image/id": np.int64,
        "panoptic_image": tfds.features.Image(encoding_format="png"),
        "panoptic_image/filename": tfds.features.Text(),
        "panoptic_objects": tfds.features.Sequence({
            "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(names=[f"c{i}" for i in range(133)]),
            "is_crowd": np.bool_,
        }),
    }  # fmt: skip
    panoptic = np.zeros((10, 20, 3), np.uint8)
    panoptic[2:5, 2:6] = [1, 1, 0]  # segment 257, a thing
    panoptic[6:9, 10:20] = [3, 0, 0]  # segment 3, stuff (label 100)
    example = {
        "image": _png(np.zeros((10, 20, 3), np.uint8)), "image/filename": "1.jpg",
        "image/id": 5, "panoptic_image": _png(panoptic), "panoptic_image/filename": "1.png",
        "panoptic_objects": [
            {"id": 257, "area": 12, "bbox": tfds.features.BBox(0.2, 0.1, 0.5, 0.3),
             "label": 2, "is_crowd": False},
            {"id": 3, "area": 30, "bbox": tfds.features.BBox(0.6, 0.5, 0.9, 1.0),
             "label": 100, "is_crowd": False},
        ],
    }  # fmt: skip
    _write(tmp_path, "coco", "1.1.0", features, [example], config="2017_panoptic")
    loader = make_instance_loader(
        "coco/2017_panoptic", "train", batch_size=1, image_size=(10, 20), max_instances=2,
        train=False, seed=0, data_dir=tmp_path, mask_format="canvas",
    )  # fmt: skip
    batch = next(iter(loader))
    assert batch["classes"][0].tolist() == [3, 0]  # label 2 -> class 3; stuff dropped
    np.testing.assert_allclose(batch["boxes"][0, 0], [2, 2, 6, 5], atol=1e-5)
    assert batch["masks"][0, 0].sum() == 12 and batch["masks"][0, 0, 2:5, 2:6].all()
    info = dataset_info("coco/2017_panoptic", data_dir=tmp_path)
    assert info.num_classes == 80 and info.class_names[2] == "c2"


def test_unprepared_catalogue_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build lvis --file_format=array_record"):
        make_instance_loader(
            "lvis", "train", batch_size=1, image_size=8, max_instances=1, train=True, seed=0,
            data_dir=tmp_path,
        )  # fmt: skip
