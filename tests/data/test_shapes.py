import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg.data import catalog, shapes


def _scenes(n, size=64, split=0, seed=0):
    return [shapes.generate_scene(seed, split, i, image_size=size, max_objects=6) for i in range(n)]


def test_scene_is_deterministic_and_depends_on_seed_split_index():
    a = shapes.generate_scene(7, 0, 5, image_size=64, max_objects=6)
    b = shapes.generate_scene(7, 0, 5, image_size=64, max_objects=6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    for other in [(8, 0, 5), (7, 1, 5), (7, 0, 6)]:
        c = shapes.generate_scene(*other, image_size=64, max_objects=6)
        assert not np.array_equal(a.image, c.image)


def test_scene_label_masks_boxes_are_consistent():
    for scene in _scenes(40):
        n = len(scene.classes)
        assert n >= 1
        assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
        assert scene.masks.shape == (n, 64, 64)
        assert scene.masks.sum(axis=0).max() <= 1  # visible parts do not overlap
        rebuilt = np.zeros((64, 64), np.uint8)
        for mask, cls, box in zip(scene.masks, scene.classes, scene.boxes, strict=True):
            assert 1 <= cls < len(shapes.CLASS_NAMES)
            assert mask.sum() >= 6
            rebuilt[mask > 0] = cls
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        np.testing.assert_array_equal(rebuilt, scene.label)


def test_scenes_have_thin_and_small_objects_of_every_class():
    scenes = _scenes(150)
    classes = np.concatenate([s.classes for s in scenes])
    assert set(classes.tolist()) == {1, 2, 3, 4}
    # Bars are thin: their masks are at most ~3 px across (area / length).
    bar_widths = []
    for s in scenes:
        for mask, cls in zip(s.masks, s.classes, strict=True):
            if cls == shapes.CLASS_NAMES.index("bar"):
                ys, xs = np.nonzero(mask)
                length = max(np.ptp(xs), np.ptp(ys)) + 1
                bar_widths.append(mask.sum() / length)
    assert bar_widths and np.median(bar_widths) <= 3.0
    areas = np.concatenate([s.masks.reshape(len(s.classes), -1).sum(1) for s in scenes])
    assert (areas < 30).mean() > 0.1  # plenty of small objects
    assert (areas > 200).mean() > 0.05  # and some large ones


def test_generate_scene_rejects_bad_sizes():
    with pytest.raises(ValueError, match="image_size"):
        shapes.generate_scene(0, 0, 0, image_size=8, max_objects=3)
    with pytest.raises(ValueError, match="max_objects"):
        shapes.generate_scene(0, 0, 0, image_size=64, max_objects=0)


def test_builder_writes_the_generated_scenes(shapes_dir, tiny_shapes):
    TINY_SHAPES = tiny_shapes
    _, builder = catalog.load_builder("jaxseg_shapes", data_dir=shapes_dir, config=TINY_SHAPES)
    assert builder.info.splits["train"].num_examples == 24
    assert builder.info.splits["validation"].num_examples == 11
    assert builder.info.splits["test"].num_examples == 4
    source = tfds.data_source(
        "jaxseg_shapes", split="validation", data_dir=shapes_dir,
        builder_kwargs={"config": TINY_SHAPES},
    )  # fmt: skip
    seen = set()
    for record in source:
        index = int(record["image_id"])
        seen.add(index)
        scene = shapes.generate_scene(
            TINY_SHAPES.seed, 1, index, image_size=48, max_objects=TINY_SHAPES.max_objects
        )
        np.testing.assert_array_equal(record["image"], scene.image)
        np.testing.assert_array_equal(record["label"][..., 0], scene.label)
        np.testing.assert_array_equal(np.stack(record["objects"]["box"]), scene.boxes)
        np.testing.assert_array_equal(record["objects"]["label"], scene.classes)
        masks = np.stack([m[..., 0] for m in record["objects"]["mask"]])
        np.testing.assert_array_equal(masks, scene.masks)
    assert seen == set(range(11))


def test_dataset_info_of_shapes():
    info = catalog.dataset_info("jaxseg_shapes")
    assert info.num_classes == 5 and info.class_names[0] == "background"
    assert catalog.dataset_info("jaxseg_shapes", "instance").num_classes == 4
    assert catalog.dataset_info("jaxseg_shapes", "instance").class_names == (
        "circle", "square", "triangle", "bar",
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown dataset"):
        catalog.dataset_info("no_such_dataset")
    with pytest.raises(ValueError, match="no 'instance' task"):
        catalog.dataset_info("voc2012", "instance")


def test_class_colours_give_each_class_its_own_hue():
    import colorsys

    hue_of = {}
    for i in range(40):
        scene = shapes.generate_scene(
            3, 0, i, image_size=96, max_objects=6, min_extent=6.0, class_colours=True
        )
        for mask, cls in zip(scene.masks, scene.classes, strict=True):
            r, g, b = scene.image[mask.astype(bool)].mean(0) / 255
            hue, _, _ = colorsys.rgb_to_hsv(r, g, b)
            hue_of.setdefault(int(cls), []).append(hue * 360)
        background = scene.image[scene.label == 0].astype(float) / 255
        saturation = (background.max(-1) - background.min(-1)) / np.maximum(
            background.max(-1), 1e-3
        )
        assert np.median(saturation) < 0.3
    assert set(hue_of) == {1, 2, 3, 4}
    for cls, hues in hue_of.items():
        # Circular distance to the class's centre hue; shading and noise blur it a little.
        distance = np.abs((np.asarray(hues) - shapes.CLASS_HUES[cls] + 180) % 360 - 180)
        assert distance.max() < 25, (cls, distance.max())
