import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg.data import denormalize, make_semantic_loader
from jaxseg.data.semantic_pipeline import SemanticEvalTransform, SemanticTrainTransform


def _loader(shapes_dir, tiny_shapes, split="train", **kwargs):
    args = dict(batch_size=4, image_size=48, train=True, seed=0)
    args.update(kwargs)
    return make_semantic_loader(
        "jaxseg_shapes", split, data_dir=shapes_dir, config=tiny_shapes, **args
    )


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_train_batches_have_the_documented_layout(shapes_dir, tiny_shapes):
    batch = next(iter(_loader(shapes_dir, tiny_shapes, image_size=(40, 56))))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (4, 40, 56, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 40, 56) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"])) <= {0, 1, 2, 3, 4, 255}
    # Normalised: roughly zero-mean, unit-scale values, not 0..255.
    assert -3 < batch["image"].mean() < 3 and batch["image"].max() < 3.0


def test_train_transform_moves_image_and_label_together():
    # An image that spells its label map: colour c * 60 for class c.
    rng = np.random.default_rng(0)
    label = np.zeros((50, 70), np.uint8)
    for c in range(1, 4):
        y, x = rng.integers(0, 40), rng.integers(0, 60)
        label[y : y + 10, x : x + 10] = c
    image = np.repeat((label * 60)[..., None], 3, axis=-1).astype(np.uint8)
    transform = SemanticTrainTransform(size=(40, 40), scale_range=(0.5, 2.0), flip=True)
    for seed in range(20):
        out = transform.random_map({"image": image, "label": label}, np.random.default_rng(seed))
        pixels = denormalize(out["image"])[..., 0].astype(int)
        known = out["label"] != 255
        # Resampling blurs edges only: almost every labelled pixel keeps its colour.
        agree = np.abs(pixels[known] - out["label"][known] * 60) <= 20
        assert agree.mean() > 0.9, seed
        # Padding is ignore in the label and zero (the mean colour) in the image.
        np.testing.assert_allclose(out["image"][~known], 0.0, atol=0.02)


def test_eval_keeps_order_pads_last_batch_and_maps_back(shapes_dir, tiny_shapes):
    batches = list(_loader(shapes_dir, tiny_shapes, "validation", train=False, batch_size=4))
    assert len(batches) == 3  # 11 examples -> 4 + 4 + 3 (+1 padding)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * 11 + [False]
    ids = np.concatenate([b["image_id"] for b in batches])
    source = tfds.data_source(
        "jaxseg_shapes", split="validation", data_dir=shapes_dir,
        builder_kwargs={"config": tiny_shapes},
    )  # fmt: skip
    assert ids[:11].tolist() == [int(r["image_id"]) for r in source]
    assert ids[11] == -1
    for b in batches:
        assert b["original_size"].tolist() == [[48, 48]] * 4
        np.testing.assert_array_equal(b["scale"], 1.0)
    # Full-resolution labels come through unchanged, in order.
    first = batches[0]
    for k in range(4):
        np.testing.assert_array_equal(first["label"][k], source[k]["label"][..., 0])


def test_eval_transform_downscales_only_large_images():
    image = np.zeros((100, 60, 3), np.uint8)
    label = np.ones((100, 60), np.uint8)
    element = {"image": image, "label": label, "image_id": 7, "image_valid": True}
    out = SemanticEvalTransform((50, 50)).map(element)
    assert out["scale"] == pytest.approx(0.5)
    assert out["original_size"].tolist() == [100, 60]
    assert (out["label"][:, :30] == 1).all() and (out["label"][:, 30:] == 255).all()
    small = SemanticEvalTransform((128, 128)).map(element)
    assert small["scale"] == 1.0 and (small["label"][:100, :60] == 1).all()
    with pytest.raises(ValueError, match="sizes differ"):
        SemanticEvalTransform((50, 50)).map({**element, "label": label[:, :10]})


def test_same_seed_same_stream_other_seed_other_stream(shapes_dir, tiny_shapes):
    a = _take(iter(_loader(shapes_dir, tiny_shapes, seed=5)), 3)
    b = _take(iter(_loader(shapes_dir, tiny_shapes, seed=5)), 3)
    c = _take(iter(_loader(shapes_dir, tiny_shapes, seed=6)), 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_iterator_state_restores_the_exact_position(shapes_dir, tiny_shapes):
    loader = _loader(shapes_dir, tiny_shapes, seed=1)
    iterator = iter(loader)
    _take(iterator, 4)  # into the second epoch (24 examples / 4 per batch = 6 per epoch)
    _take(iterator, 3)
    state = iterator.get_state()
    expected = _take(iterator, 3)
    resumed = iter(_loader(shapes_dir, tiny_shapes, seed=1))
    resumed.set_state(state)
    for x, y in zip(expected, _take(resumed, 3), strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_worker_processes_transform_the_same_elements(shapes_dir, tiny_shapes):
    # With W workers, worker w batches stream positions w, w + W, ...; each element's
    # record and augmentation depend only on the seed and its position.
    serial = _take(iter(_loader(shapes_dir, tiny_shapes, seed=2)), 2)
    images = np.concatenate([b["image"] for b in serial])  # positions 0..7
    iterator = iter(_loader(shapes_dir, tiny_shapes, seed=2, worker_count=2))
    parallel = _take(iterator, 2)
    np.testing.assert_array_equal(parallel[0]["image"], images[0::2])
    np.testing.assert_array_equal(parallel[1]["image"], images[1::2])
    # Exact resume also holds with workers.
    state = iterator.get_state()
    expected = _take(iterator, 2)
    resumed = iter(_loader(shapes_dir, tiny_shapes, seed=2, worker_count=2))
    resumed.set_state(state)
    for x, y in zip(expected, _take(resumed, 2), strict=True):
        np.testing.assert_array_equal(x["label"], y["label"])


def test_eval_shards_split_the_data_evenly(shapes_dir, tiny_shapes):
    shards = [
        list(
            _loader(
                shapes_dir, tiny_shapes, "validation", train=False, batch_size=2,
                shard_index=i, shard_count=3,
            )
        )
        for i in range(3)
    ]  # fmt: skip
    assert [len(s) for s in shards] == [2, 2, 2]  # 11 padded to 12 = 3 shards x 2 x 2
    ids = [
        i for s in shards for b in s for i, v in zip(b["image_id"], b["valid"], strict=True) if v
    ]
    assert sorted(ids) == list(range(11))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(seed=-1), "seed"),
        (dict(shard_index=2, shard_count=2), "shard_index"),
        (dict(image_size=(0, 4)), "image_size"),
        (dict(scale_range=(2.0, 1.0)), "scale_range"),
        (dict(batch_size=25), "fewer than batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(shapes_dir, tiny_shapes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _loader(shapes_dir, tiny_shapes, **kwargs)


def test_loader_rejects_unknown_dataset_and_wrong_task():
    with pytest.raises(ValueError, match="unknown dataset"):
        make_semantic_loader("nope", "train", batch_size=1, image_size=8, train=True, seed=0)
    with pytest.raises(ValueError, match="no 'semantic' task"):
        make_semantic_loader("lvis", "train", batch_size=1, image_size=8, train=True, seed=0)


def test_normalize_and_pad_equals_pad_then_normalize():
    from jaxseg.data import transforms

    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    fast = transforms.normalize_and_pad(image, (9, 8))
    slow = transforms.normalize(transforms.pad_image(image, (9, 8)))
    np.testing.assert_allclose(fast, slow, atol=0.01)  # the mean colour is rounded to uint8
    np.testing.assert_array_equal(fast[:7, :5], slow[:7, :5])
    np.testing.assert_array_equal(transforms.denormalize(fast[:7, :5]), image)
