import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils

from jaxseg.data import (
    CocoFormatConfig,
    catalog,
    coco_annotations,
    dataset_info,
    make_instance_loader,
)


def _save(path, array, mode=None, fmt=None):
    Image.fromarray(array, mode=mode).save(path, format=fmt)


def _rgb(h, w, value):
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    """A fake COCO-format dataset with every kind of defect the builder must handle."""
    root = tmp_path_factory.mktemp("coco")
    images = root / "images"
    images.mkdir()
    _save(images / "a.jpg", _rgb(40, 50, 120), fmt="JPEG")
    _save(images / "gray.png", np.full((30, 30), 200, np.uint8))
    _save(images / "rgba.png", np.dstack([_rgb(30, 30, 90), np.full((30, 30), 255, np.uint8)]))
    Image.fromarray(np.full((30, 30), 65535, np.uint16)).save(images / "deep.png")
    jpeg = io.BytesIO()
    Image.fromarray(_rgb(40, 40, 10)).save(jpeg, format="JPEG")
    (images / "truncated.jpg").write_bytes(jpeg.getvalue()[:200])
    (images / "garbage.jpg").write_bytes(b"this is not an image")
    _save(images / "wrong_size.png", _rgb(20, 20, 5))

    rle_mask = np.zeros((40, 50), np.uint8, order="F")
    rle_mask[20:30, 30:45] = 1
    compressed = mask_utils.encode(np.asfortranarray(rle_mask))
    compressed["counts"] = compressed["counts"].decode()
    crowd = np.zeros((40, 50), np.uint8)
    crowd[0:5, 0:10] = 1
    uncompressed = {"size": [40, 50], "counts": _uncompressed_counts(crowd)}
    square = [10, 10, 20, 10, 20, 20, 10, 20]  # x, y pairs of a 10x10 square
    annotations = [
        dict(id=1, image_id=1, category_id=3, segmentation=[square], bbox=[10, 10, 10, 10]),
        dict(id=2, image_id=1, category_id=7, segmentation=compressed, bbox=[30, 20, 15, 10]),
        dict(id=3, image_id=1, category_id=3, segmentation=uncompressed, iscrowd=1),
        # A 2-point polygon beside a good one: the bad polygon is dropped.
        dict(id=4, image_id=1, category_id=12, segmentation=[[1, 1, 2, 2], square]),
        dict(id=5, image_id=1, category_id=12, segmentation=[[1, 1, 5, 5]]),  # only bad
        dict(id=6, image_id=1, category_id=99, segmentation=[square]),  # unknown category
        dict(id=7, image_id=1, category_id=3, segmentation=[square], bbox=[45, 35, 20, 20]),
        dict(id=8, image_id=1, category_id=3, segmentation=[square], bbox=[10, 10, 0, 5]),
        dict(id=9, image_id=1, category_id=3, segmentation=[square], bbox=[60, 50, 5, 5]),
        dict(id=10, image_id=42, category_id=3, segmentation=[square]),  # no such image
    ]
    train = {
        "images": [
            dict(id=1, file_name="a.jpg", height=40, width=50),
            dict(id=2, file_name="gray.png", height=30, width=30),
            dict(id=3, file_name="rgba.png", height=30, width=30),
            dict(id=4, file_name="deep.png", height=30, width=30),
            dict(id=5, file_name="truncated.jpg", height=40, width=40),
            dict(id=6, file_name="garbage.jpg", height=40, width=40),
            dict(id=7, file_name="missing.jpg", height=40, width=40),
            dict(id=8, file_name="wrong_size.png", height=10, width=10),
        ],
        "annotations": annotations,
        "categories": [
            dict(id=12, name="zebra"),
            dict(id=3, name="cat"),
            dict(id=7, name="dog"),
        ],
    }
    (root / "train.json").write_text(json.dumps(train))
    val = dict(train, images=train["images"][:1], annotations=annotations[:2])
    (root / "val.json").write_text(json.dumps(val))
    return root


def _uncompressed_counts(mask):
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def _config(name="fake"):
    return CocoFormatConfig(
        name=name,
        splits={"train": ("train.json", "images"), "validation": ("val.json", "images")},
    )


@pytest.fixture(scope="module")
def built(coco_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_coco")
    _, builder = catalog.load_builder(
        "coco", data_dir=data_dir, config=_config(), manual_dir=coco_dir
    )
    return data_dir, builder


def test_categories_map_to_contiguous_classes_with_names(built, coco_dir):
    data_dir, _ = built
    info = dataset_info(
        "coco", "instance", data_dir=data_dir, config=_config(), manual_dir=coco_dir
    )
    assert info.class_names == ("cat", "dog", "zebra")  # sorted by category id 3, 7, 12
    assert info.instance.category_ids == (3, 7, 12)
    assert info.num_classes == 3


def test_bad_images_are_converted_or_skipped_and_counted(built):
    _, builder = built
    skipped = builder.info.metadata["skipped"]["train"]
    assert skipped["corrupt or unreadable image"] == 2  # truncated + garbage
    assert skipped["missing image file"] == 1
    assert skipped["image is 20x20 but annotated as 10x10"] == 1
    assert skipped["unknown category id 99"] == 1
    assert skipped["polygon with fewer than 3 points dropped"] == 2
    assert skipped["annotation without a usable polygon"] == 1
    assert skipped["box outside the image"] == 1  # id 9
    assert skipped[f"repaired: {coco_annotations.BOX_FROM_MASK}"] == 1  # id 8, zero width
    assert skipped["annotations of an image id not in 'images'"] == 1
    source = builder.as_data_source("train")
    assert len(source) == 4  # a, gray, rgba, deep
    by_name = {r["file_name"].decode(): r for r in source}
    assert set(by_name) == {"a.jpg", "gray.png", "rgba.png", "deep.png"}
    np.testing.assert_array_equal(by_name["gray.png"]["image"], _rgb(30, 30, 200))
    np.testing.assert_array_equal(by_name["rgba.png"]["image"], _rgb(30, 30, 90))
    np.testing.assert_array_equal(by_name["deep.png"]["image"], _rgb(30, 30, 255))
    assert len(by_name["gray.png"]["objects"]["label"]) == 0  # kept without annotations


def test_instances_are_decoded_clipped_and_flagged(built):
    _, builder = built
    record = next(r for r in builder.as_data_source("train") if r["image_id"] == 1)
    objects = record["objects"]
    labels = np.asarray(objects["label"]).tolist()
    boxes = np.stack(objects["box"])
    masks = np.stack([m[..., 0] for m in objects["mask"]])
    crowd = np.asarray(objects["is_crowd"]).tolist()
    # ids 1 (cat), 2 (dog), 3 (cat crowd), 4 (zebra), 7 (cat, box clipped to the image),
    # 8 (cat, zero-width box: the mask's box).
    assert labels == [1, 2, 1, 3, 1, 1]
    assert crowd == [False, False, True, False, False, False]
    np.testing.assert_array_equal(boxes[0], [10, 10, 20, 20])
    np.testing.assert_array_equal(boxes[4], [45, 35, 50, 40])
    ys, xs = np.nonzero(masks[5])
    np.testing.assert_array_equal(boxes[5], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_array_equal(boxes[2], [0, 0, 10, 5])  # box from the mask
    assert masks[1][20:30, 30:45].all() and masks[1].sum() == 150
    assert masks[2][0:5, 0:10].all() and masks[2].sum() == 50
    assert masks[0][11:19, 11:19].all() and masks[0][:9].sum() == 0


def test_instance_loader_reads_the_coco_dataset(built, coco_dir):
    data_dir, _ = built
    loader = make_instance_loader(
        "coco", "validation", batch_size=2, image_size=(80, 80), max_instances=4, train=False,
        seed=0, data_dir=data_dir, config=_config(), manual_dir=coco_dir, mask_format="canvas",
    )  # fmt: skip
    (batch,) = list(loader)
    assert batch["image_valid"].tolist() == [True, False]
    assert batch["image_id"].tolist() == [1, -1]
    assert batch["original_size"][0].tolist() == [40, 50]
    np.testing.assert_allclose(batch["scale"][0], 1.6)
    assert batch["classes"][0].tolist() == [1, 2, 0, 0]
    np.testing.assert_allclose(batch["boxes"][0, 0], [16, 16, 32, 32])
    np.testing.assert_allclose(batch["boxes"][0, 1], [48, 32, 72, 48])
    assert batch["masks"][0, 1, 32:48, 48:72].all() and batch["masks"][0, 1].sum() == 16 * 24


def test_missing_annotation_file_stops_before_writing(coco_dir, tmp_path):
    config = CocoFormatConfig(name="missing", splits={"train": ("nope.json", "images")})
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        catalog.load_builder("coco", data_dir=tmp_path, config=config, manual_dir=coco_dir)
    assert not tfds.builder("jaxseg_coco", config=config, data_dir=tmp_path).is_prepared()


def test_a_build_that_fails_halfway_does_not_read_as_complete(coco_dir, tmp_path, monkeypatch):
    from jaxseg.data import coco_builder

    calls = {"n": 0}
    real_encode = coco_builder.encode_png

    def failing_encode(array):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_encode(array)

    monkeypatch.setattr(coco_builder, "encode_png", failing_encode)
    with pytest.raises(OSError, match="disk full"):
        catalog.load_builder("coco", data_dir=tmp_path, config=_config("half"), manual_dir=coco_dir)
    builder = tfds.builder("jaxseg_coco", config=_config("half"), data_dir=tmp_path)
    assert not builder.is_prepared()
    with pytest.raises(Exception):  # noqa: B017 - TFDS raises its own not-found errors
        builder.as_data_source("train")
    monkeypatch.setattr(coco_builder, "encode_png", real_encode)
    _, rebuilt = catalog.load_builder(
        "coco", data_dir=tmp_path, config=_config("half"), manual_dir=coco_dir
    )
    assert len(rebuilt.as_data_source("train")) == 4


def test_categories_must_agree_across_splits(coco_dir, tmp_path):
    data = json.loads((coco_dir / "val.json").read_text())
    data["categories"] = data["categories"][:2]
    (tmp_path / "other.json").write_text(json.dumps(data))
    config = CocoFormatConfig(
        name="disagree",
        splits={
            "train": ("train.json", "images"),
            "validation": (str(tmp_path / "other.json"), "images"),
        },
    )
    with pytest.raises(ValueError, match="all splits must agree"):
        catalog.load_builder("coco", data_dir=tmp_path, config=config, manual_dir=coco_dir)


def test_a_split_with_no_readable_image_is_an_error(coco_dir, tmp_path):
    data = json.loads((coco_dir / "train.json").read_text())
    data["images"] = [i for i in data["images"] if i["file_name"] == "missing.jpg"]
    (tmp_path / "broken.json").write_text(json.dumps(data))
    config = CocoFormatConfig(
        name="broken", splits={"train": (str(tmp_path / "broken.json"), str(coco_dir / "images"))}
    )
    with pytest.raises(ValueError, match="none of the 1 images"):
        catalog.load_builder("coco", data_dir=tmp_path, config=config)


def test_boxes_without_extent_come_from_the_mask_with_one_warning(tmp_path, caplog):
    """Negative or zero width / height beside a valid polygon: the mask's box, warned once."""
    images = tmp_path / "images"
    images.mkdir()
    square = [10, 10, 20, 10, 20, 20, 10, 20]
    data = {"images": [], "annotations": [], "categories": [dict(id=1, name="cat")]}
    for image_id in range(1, 4):
        _save(images / f"{image_id}.png", _rgb(30, 30, 40 * image_id))
        data["images"].append(dict(id=image_id, file_name=f"{image_id}.png", height=30, width=30))
    for ann_id, image_id, bbox in (
        (11, 1, [20, 10, -10, 10]),  # negative width: corners swapped
        (12, 2, [10, 20, 10, -10]),  # negative height
        (13, 3, [10, 10, 10, 10]),  # a good one
    ):
        data["annotations"].append(
            dict(id=ann_id, image_id=image_id, category_id=1, segmentation=[square], bbox=bbox)
        )
    (tmp_path / "train.json").write_text(json.dumps(data))
    config = CocoFormatConfig(name="flipped", splits={"train": ("train.json", "images")})
    with caplog.at_level("WARNING"):
        _, builder = catalog.load_builder(
            "coco", data_dir=tmp_path / "tfds", config=config, manual_dir=tmp_path
        )
    records = sorted(builder.as_data_source("train"), key=lambda r: int(r["image_id"]))
    boxes = [np.stack(r["objects"]["box"]) for r in records]
    assert [len(b) for b in boxes] == [1, 1, 1]  # nothing dropped
    mask = records[0]["objects"]["mask"][0][..., 0]
    ys, xs = np.nonzero(mask)
    expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    np.testing.assert_array_equal(boxes[0][0], expected)
    np.testing.assert_array_equal(boxes[1][0], expected)
    np.testing.assert_array_equal(boxes[2][0], [10, 10, 20, 20])
    skipped = builder.info.metadata["skipped"]["train"]
    assert skipped == {f"repaired: {coco_annotations.BOX_FROM_MASK}": 2}
    warnings = [
        r.getMessage() for r in caplog.records if "taken from their masks" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "2 annotation(s)" in warnings[0] and "annotation 11 " in warnings[0], warnings[0]
    assert not [r for r in caplog.records if "annotation 12" in r.getMessage()]


def test_a_zero_byte_image_is_named_in_the_skip_message(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    _save(images / "good.png", _rgb(20, 20, 9))
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_bytes(b"hello")
    data = {
        "images": [
            dict(id=1, file_name="good.png", height=20, width=20),
            dict(id=2, file_name="empty.jpg", height=20, width=20),
            dict(id=3, file_name="text.jpg", height=20, width=20),
        ],
        "categories": [dict(id=1, name="cat")],
    }
    (tmp_path / "train.json").write_text(json.dumps(data))
    config = CocoFormatConfig(name="empty", splits={"train": ("train.json", "images")})
    with caplog.at_level("WARNING"):
        catalog.load_builder("coco", data_dir=tmp_path / "tfds", config=config, manual_dir=tmp_path)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "BytesIO" not in text, text
    assert f"{images / 'empty.jpg'}: the file is empty (0 bytes)" in text, text
    assert "text.jpg: not an image format PIL can read (5 bytes starting b'hello')" in text, text
