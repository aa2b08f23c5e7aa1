"""Broken samples mixed into a dataset: train.py completes, names them, and trains the same model.

A VOC-format folder (semantic) and a COCO-format folder (instance) are written twice: clean,
and with broken samples added (corrupt and truncated image bytes, empty and missing
annotations, labels of the wrong size, degenerate boxes and polygons, masks of the wrong
size, images whose header claims billions of pixels). The builders skip and report them, so
training on the dirty folder must give bit for bit the model trained on the clean one.
"""

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from image_bytes import jpeg, png_header
from PIL import Image

from jaxseg.data import catalog
from jaxseg.runtime.checkpointing import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_STEPS = 4


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _scene(rng, height=40, width=48):
    """Returns (uint8 [H, W, 3] image, uint8 [H, W] VOC label with 255 borders)."""
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, height - 10), rng.integers(0, width - 10)
        label[y : y + 10, x : x + 10] = rng.integers(1, 21)
        image[y : y + 10, x : x + 10] = label[y, x] * 12
    label[0, :] = 255
    return image, label


def write_voc(root, *, broken):
    """Writes a VOCdevkit under `root` (10 train, 4 val images); returns the bad ids."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {"train": [f"2007_{i:06d}" for i in range(10)], "val": ["2008_000001", "2008_000002"]}
    splits["val"] += ["2008_000003", "2008_000004"]
    for name in splits["train"] + splits["val"]:
        image, label = _scene(rng)
        (voc / "JPEGImages" / f"{name}.jpg").write_bytes(jpeg(image))
        (voc / "SegmentationClass" / f"{name}.png").write_bytes(_png(label))
    bad = {}
    if broken:
        image, label = _scene(rng)
        good_jpeg, good_png = jpeg(image), _png(label)
        bad = {
            "2009_000001": (b"\xff\xd8 corrupt bytes, not a JPEG", good_png),
            "2009_000002": (good_jpeg[: len(good_jpeg) // 2], good_png),  # truncated image
            "2009_000003": (good_jpeg, b""),  # empty annotation file
            "2009_000004": (good_jpeg, None),  # missing annotation
            "2009_000005": (good_jpeg, _png(label[:30])),  # label of the wrong size
            "2009_000006": (png_header(50_000, 50_000), good_png),  # decompression bomb
            "2009_000007": (png_header(10_000, 10_000), good_png),  # 100 Mpx: too large
            "2009_000008": (good_jpeg, _png(np.dstack([label] * 3))),  # RGB, not class ids
        }
        for name, (image_bytes, label_bytes) in bad.items():
            (voc / "JPEGImages" / f"{name}.jpg").write_bytes(image_bytes)
            if label_bytes is not None:
                (voc / "SegmentationClass" / f"{name}.png").write_bytes(label_bytes)
        # Interleaved with the good ones in the lists, the way real lists are.
        mixed = []
        for good, broken_name in zip(splits["train"], [*bad, None, None], strict=True):
            mixed += [good] if broken_name is None else [good, broken_name]
        splits["train"] = mixed
        splits["val"].insert(1, "2009_000001")
    for split, names in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return sorted(bad)


def _train(config_file, workdir, overrides, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("JAXSEG_COMPILATION_CACHE", None)
    command = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config",
        os.path.join(ROOT, "configs", config_file),
        "--workdir",
        str(workdir),
        f"--config.compilation_cache_dir={tmp_path / 'xla'}",
        *overrides,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _final_state(workdir):
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
    assert checkpointer.latest_step() == NUM_STEPS
    return jax.tree_util.tree_leaves_with_path(checkpointer.restore_raw(NUM_STEPS))


def _assert_bitwise_equal(a, b):
    assert [p for p, _ in a] == [p for p, _ in b]
    differ = [
        jax.tree_util.keystr(path)
        for (path, x), (_, y) in zip(a, b, strict=True)
        if not np.array_equal(np.asarray(x), np.asarray(y))
    ]
    assert not differ, differ


@pytest.mark.slow
def test_semantic_training_on_broken_voc_equals_training_on_clean_voc(tmp_path):
    states = {}
    for kind in ("clean", "dirty"):
        manual_dir = tmp_path / kind
        bad = write_voc(manual_dir, broken=kind == "dirty")
        overrides = [
            "--config.dataset.name=voc2012",
            "--config.dataset.config=default",
            f"--config.dataset.manual_dir={manual_dir}",
            f"--config.dataset.data_dir={tmp_path / kind / 'tfds'}",
            "--config.dataset.eval_split=val",
            "--config.dataset.image_size=32",
            "--config.dataset.eval_image_size=48",
            "--config.model.width=0.03125",
            "--config.batch_size=2",
            f"--config.num_train_steps={NUM_STEPS}",
            "--config.optimizer.warmup_steps=0",
            "--config.log_every_steps=2",
            f"--config.eval_every_steps={NUM_STEPS}",
            f"--config.checkpoint_every_steps={NUM_STEPS}",
            "--config.eval.batch_size=2",
            "--config.eval.num_pictures=0",
        ]
        stderr = _train("fcn8s_shapes.py", tmp_path / f"run_{kind}", overrides, tmp_path)
        for name in bad:  # each bad sample is named in the log
            assert name in stderr, (name, stderr[-3000:])
        states[kind] = _final_state(tmp_path / f"run_{kind}")
        if kind == "dirty":
            _, builder = catalog.load_builder(
                "voc2012", data_dir=tmp_path / kind / "tfds", manual_dir=manual_dir
            )
            skipped = builder.info.metadata["skipped"]
            assert sum(skipped["train"].values()) == len(bad), skipped
            assert sum(skipped["val"].values()) == 1, skipped
    _assert_bitwise_equal(states["clean"], states["dirty"])


def write_coco(root, *, broken):
    """Writes a COCO-format folder (the `coco/2017` layout) under `root`; returns bad ids."""
    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    bad = []
    for split, count, first_bad in (("train", 8, 101), ("val", 3, 201)):
        bad += _write_coco_split(root, split, count, first_bad if broken else None, rng)
    return bad


def _write_coco_split(root, split, count, first_bad, rng):
    """Writes `count` good images of `split` (plus bad ones from id `first_bad`, if given)."""
    image_dir = root / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []

    def add(image_id, data, segmentations, height=40, width=48):
        (image_dir / f"{image_id}.jpg").write_bytes(data)
        images.append(dict(id=image_id, file_name=f"{image_id}.jpg", height=height, width=width))
        for fields in segmentations:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, **fields))

    for image_id in range(1, count + 1):
        image, _ = _scene(rng)
        x, y = (int(v) for v in rng.integers(2, 30, 2))
        square = [x, y, x + 12, y, x + 12, y + 12, x, y + 12]
        good = dict(category_id=1, segmentation=[square], bbox=[x, y, 12, 12])
        broken_annotations = [
            dict(category_id=2, segmentation=[]),  # empty segmentation
            dict(category_id=1, segmentation=[[x, y, x + 5, y]]),  # 2-point polygon
            dict(category_id=1, segmentation=[square], bbox=[90, 90, 5, 5]),  # outside
            dict(category_id=2, segmentation={"size": [10, 10], "counts": [0, 100]}),
        ]
        extra = []
        if first_bad is not None and split == "train":  # a broken annotation beside a good one
            extra = [broken_annotations[image_id % len(broken_annotations)]]
        add(image_id, jpeg(image), [good, *extra])
    bad = []
    if first_bad is not None:
        image, _ = _scene(np.random.default_rng(first_bad))  # not from `rng`: clean must match
        triangle = [dict(category_id=1, segmentation=[[1, 1, 9, 1, 9, 9]])]
        add(first_bad, b"corrupt bytes", triangle)
        add(first_bad + 1, png_header(50_000, 50_000), triangle, 50_000, 50_000)
        add(first_bad + 2, jpeg(image), triangle, 30, 30)  # annotated with the wrong size
        bad = [first_bad, first_bad + 1, first_bad + 2]
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "bar"}],
    }
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return bad


def _records(builder, split):
    source = builder.as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def test_broken_coco_builds_the_same_records_as_clean_coco(tmp_path):
    builders = {}
    for kind in ("clean", "dirty"):
        write_coco(tmp_path / kind, broken=kind == "dirty")
        _, builders[kind] = catalog.load_builder(
            "coco", data_dir=tmp_path / kind / "tfds", manual_dir=tmp_path / kind
        )
    skipped = builders["dirty"].info.metadata["skipped"]
    assert sum(skipped["train"].values()) >= 8 + 3, skipped  # some count twice
    assert sum(skipped["validation"].values()) >= 3, skipped
    for split in ("train", "validation"):
        clean, dirty = _records(builders["clean"], split), _records(builders["dirty"], split)
        assert len(clean) == len(dirty) > 0
        for a, b in zip(clean, dirty, strict=True):
            jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(os.path.join(ROOT, "configs", "mask_rcnn_shapes.py")),
    reason="configs/mask_rcnn_shapes.py not written yet",
)
def test_instance_training_on_broken_coco_equals_training_on_clean_coco(tmp_path):
    states = {}
    for kind in ("clean", "dirty"):
        bad = write_coco(tmp_path / kind, broken=kind == "dirty")
        overrides = [
            "--config.dataset.name=coco",
            "--config.dataset.config=2017",
            f"--config.dataset.manual_dir={tmp_path / kind}",
            f"--config.dataset.data_dir={tmp_path / kind / 'tfds'}",
            "--config.dataset.train_split=train",
            "--config.dataset.eval_split=validation",
            "--config.batch_size=2",
            f"--config.num_train_steps={NUM_STEPS}",
            "--config.optimizer.warmup_steps=0",
            "--config.log_every_steps=2",
            f"--config.eval_every_steps={NUM_STEPS}",
            f"--config.checkpoint_every_steps={NUM_STEPS}",
            "--config.eval.batch_size=2",
            "--config.eval.num_pictures=0",
        ]
        stderr = _train("mask_rcnn_shapes.py", tmp_path / f"run_{kind}", overrides, tmp_path)
        for image_id in bad:
            assert f"{image_id}.jpg" in stderr, (image_id, stderr[-3000:])
        states[kind] = _final_state(tmp_path / f"run_{kind}")
    _assert_bitwise_equal(states["clean"], states["dirty"])
