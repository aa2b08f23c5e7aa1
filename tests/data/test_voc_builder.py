import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxseg.data import catalog, dataset_info, make_semantic_loader
from jaxseg.data.sources import SourceChangedError

_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [224, 224, 192]


def _palette_png(path, label):
    image = Image.fromarray(label, mode="P")
    image.putpalette(_PALETTE)
    image.save(path)


def _label(h, w, cls):
    label = np.zeros((h, w), np.uint8)
    label[5:15, 5:20] = cls
    label[4, 4:21] = 255  # VOC's void border
    return label


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    ids = {
        "2007_000001": (20, 30, 1),
        "2007_000002": (24, 24, 2),
        "2008_000003": (20, 30, 3),
        "2008_000004": (20, 30, 1),
        "2009_000005": (22, 26, 4),
    }
    for i, (h, w, cls) in ids.items():
        Image.fromarray(np.full((h, w, 3), 40 * cls, np.uint8)).save(
            voc / "JPEGImages" / f"{i}.jpg"
        )
        _palette_png(voc / "SegmentationClass" / f"{i}.png", _label(h, w, cls))
    # Defects: a label of the wrong size, a missing image, an out-of-range label value.
    _palette_png(voc / "SegmentationClass" / "2008_000004.png", _label(10, 10, 1))
    (voc / "JPEGImages" / "2008_000003.jpg").unlink()
    bad = _label(22, 26, 4)
    bad[0, 0] = 77
    _palette_png(voc / "SegmentationClass" / "2009_000005.png", bad)
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("2007_000001\n2008_000003\n2008_000004\n")
    (lists / "val.txt").write_text("2007_000002\n2009_000005\n")
    # SBD, with its .mat labels (no void border), and a seg11valid list.
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir()
    for i, cls in (("2010_000010", 5), ("2010_000011", 6), ("2007_000002", 2)):
        Image.fromarray(np.full((16, 18, 3), 9 * cls, np.uint8)).save(sbd / "img" / f"{i}.jpg")
        seg = np.zeros((16, 18), np.uint8)
        seg[2:8, 3:9] = cls
        scipy.io.savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": seg}})
    (sbd / "train.txt").write_text("2010_000010\n2010_000011\n")
    (sbd / "val.txt").write_text("2007_000002\n")
    (root / "seg11valid.txt").write_text("2007_000002\n")
    return root


def test_voc_default_config(voc_root, tmp_path):
    _, builder = catalog.load_builder("voc2012", data_dir=tmp_path, manual_dir=voc_root)
    train = {r["file_name"].decode(): r for r in builder.as_data_source("train")}
    assert set(train) == {"2007_000001"}  # 2008_000003 missing image, 2008_000004 wrong size
    label = train["2007_000001"]["label"][..., 0]
    np.testing.assert_array_equal(label, _label(20, 30, 1))
    assert int(train["2007_000001"]["image_id"]) == 2007000001
    skipped = builder.info.metadata["skipped"]
    assert skipped["train"] == {"label size (10, 10) differs from image size (20, 30)": 1,
                                "missing file": 1}  # fmt: skip
    assert skipped["val"] == {"repaired: label values outside 0..20 and 255 set to 255": 1}
    val = {r["file_name"].decode(): r for r in builder.as_data_source("val")}
    assert val["2009_000005"]["label"][0, 0, 0] == 255
    assert dataset_info("voc2012").num_classes == 21


def test_voc_sbd_config_splits_and_mat_labels(voc_root, tmp_path):
    _, builder = catalog.load_builder("voc2012/sbd", data_dir=tmp_path, manual_dir=voc_root)
    assert set(builder.info.splits) == {"train", "trainval", "val", "seg11valid"}
    assert builder.info.splits["train"].num_examples == 2
    assert builder.info.splits["trainval"].num_examples == 3
    train = {r["file_name"].decode(): r for r in builder.as_data_source("train")}
    expected = np.zeros((16, 18), np.uint8)
    expected[2:8, 3:9] = 6
    np.testing.assert_array_equal(train["2010_000011"]["label"][..., 0], expected)
    (seg11,) = builder.as_data_source("seg11valid")
    assert seg11["file_name"] == b"2007_000002"
    np.testing.assert_array_equal(seg11["label"][..., 0], _label(24, 24, 2))  # VOC's label


def test_semantic_loader_on_voc_keeps_full_resolution(voc_root, tmp_path):
    loader = make_semantic_loader(
        "voc2012", "val", batch_size=2, image_size=32, train=False, seed=0,
        data_dir=tmp_path, manual_dir=voc_root,
    )  # fmt: skip
    (batch,) = list(loader)
    assert batch["valid"].tolist() == [True, True]
    for k, (h, w) in enumerate(batch["original_size"].tolist()):
        label = batch["label"][k]
        assert (label[h:] == 255).all() and (label[:, w:] == 255).all()
        cls = 2 if (h, w) == (24, 24) else 4
        expected = _label(h, w, cls)
        if cls == 4:
            expected[0, 0] = 255
        np.testing.assert_array_equal(label[:h, :w], expected)


def test_missing_devkit_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        catalog.load_builder("voc2012", data_dir=tmp_path, manual_dir=tmp_path)


def test_a_voc_build_refuses_another_devkit(voc_root, tmp_path):
    catalog.load_builder("voc2012", data_dir=tmp_path / "tfds", manual_dir=voc_root)
    other = tmp_path / "other"
    shutil.copytree(voc_root, other)
    catalog.load_builder("voc2012", data_dir=tmp_path / "tfds", manual_dir=other)  # same data
    lists = other / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("2007_000001\n")
    with pytest.raises(SourceChangedError) as error:
        catalog.load_builder("voc2012", data_dir=tmp_path / "tfds", manual_dir=other)
    message = str(error.value)
    assert "train list: sha256:" in message and str(lists / "train.txt") in message, message
    assert str(voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation") in message
