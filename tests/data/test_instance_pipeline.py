import logging

import numpy as np
import pytest

from jaxseg.data import denormalize, make_instance_loader
from jaxseg.data.instance_masks import AxisAffine, crop_masks, warp_masks
from jaxseg.data.instance_pipeline import InstanceTransform


def _loader(shapes_dir, tiny_shapes, split="train", **kwargs):
    args = dict(batch_size=4, image_size=96, max_instances=6, train=True, seed=0)
    args.update(kwargs)
    return make_instance_loader(
        "jaxseg_shapes", split, data_dir=shapes_dir, config=tiny_shapes, **args
    )


def _crop_reference(mask, box, affine, m):
    """Slow float64 loop: bilinear sample of the original mask at each cell centre."""
    h, w = mask.shape
    out = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            xc = box[0] + (j + 0.5) * (box[2] - box[0]) / m
            yc = box[1] + (i + 0.5) * (box[3] - box[1]) / m
            x = (xc - affine.bx) / affine.ax - 0.5
            y = (yc - affine.by) / affine.ay - 0.5
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            total = 0.0
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        total += wy * wx * mask[yy, xx]
            out[i, j] = total
    return out


def test_crop_masks_matches_a_slow_reference_with_flip_and_scale():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 20, 30)) > 0.5).astype(np.uint8)
    boxes_orig = np.array([[2, 3, 17, 12], [0, 0, 30, 20], [10.5, 4.25, 13.5, 19]], np.float32)
    for affine in [AxisAffine(1.5, 0, 1.5, 0), AxisAffine(-0.7, 21.0, 0.7, -2.0)]:
        boxes = affine.boxes(boxes_orig)
        got = crop_masks(masks, boxes, affine, 7)
        for k in range(3):
            reference = _crop_reference(masks[k], boxes[k], affine, 7)
            tie = np.abs(reference - 0.5) < 1e-6  # rounding may fall either way there
            np.testing.assert_array_equal(got[k][~tie], (reference >= 0.5)[~tie])
            assert (~tie).sum() > 40


def test_warp_masks_flips_scales_and_zeroes_outside():
    mask = np.zeros((1, 4, 6), np.uint8)
    mask[0, 1, 0] = 1  # one pixel at row 1, column 0
    out = warp_masks(mask, AxisAffine(-2.0, 12.0, 2.0, 0.0), (10, 14))
    expected = np.zeros((10, 14), np.uint8)
    expected[2:4, 10:12] = 1  # column 0 lands at the right end after the flip
    np.testing.assert_array_equal(out[0], expected)
    assert crop_masks(
        np.zeros((0, 4, 6), np.uint8), np.zeros((0, 4)), AxisAffine(1, 0, 1, 0), 5
    ).shape == (0, 5, 5)


def test_batches_have_the_documented_layout(shapes_dir, tiny_shapes):
    batch = next(iter(_loader(shapes_dir, tiny_shapes, image_size=(80, 96), mask_size=28)))
    shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
    assert shapes == {
        "image": ((4, 80, 96, 3), np.float32),
        "boxes": ((4, 6, 4), np.float32),
        "classes": ((4, 6), np.int32),
        "masks": ((4, 6, 28, 28), np.uint8),
        "valid": ((4, 6), np.bool_),
        "image_id": ((4,), np.int64),
        "original_size": ((4, 2), np.int32),
        "scale": ((4,), np.float32),
        "image_valid": ((4,), np.bool_),
    }
    valid = batch["valid"]
    # Real instances first, padding after; classes 1..4 exactly where valid.
    assert (np.sort(valid, axis=1)[:, ::-1] == valid).all()
    assert ((batch["classes"] > 0) == valid).all() and batch["classes"].max() <= 4
    boxes = batch["boxes"][valid]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 96 and boxes[:, 3].max() <= 80
    np.testing.assert_allclose(batch["scale"], 80 / 48)
    assert (batch["masks"][~valid] == 0).all()
    assert batch["masks"][valid].reshape(valid.sum(), -1).any(axis=1).all()


def test_canvas_masks_agree_with_boxes_and_the_image(shapes_dir, tiny_shapes):
    loader = _loader(
        shapes_dir, tiny_shapes, "validation", train=False, mask_format="canvas", max_instances=8
    )
    for batch in loader:
        for b in range(4):
            if not batch["image_valid"][b]:
                continue
            for n in np.flatnonzero(batch["valid"][b]):
                ys, xs = np.nonzero(batch["masks"][b, n])
                # The shapes' boxes are exact mask boxes; scale 2 keeps them on the grid.
                np.testing.assert_array_equal(
                    batch["boxes"][b, n], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                )


def test_flip_mirrors_image_boxes_and_masks():
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:10, 2:8] = 255
    masks = np.zeros((1, 20, 30), np.uint8)
    masks[0, 5:10, 2:8] = 1
    element = {
        "image": image, "masks": masks, "boxes": np.array([[2, 5, 8, 10]], np.float32),
        "classes": np.array([3], np.int32), "is_crowd": np.array([False]),
        "image_id": np.int64(1), "image_valid": np.bool_(True),
    }  # fmt: skip
    transform = InstanceTransform(
        size=(40, 60), max_instances=2, train=True, mask_format="canvas", flip=True
    )
    outs = [transform.random_map(element, np.random.default_rng(s)) for s in range(8)]
    flipped = [o for o in outs if o["boxes"][0, 0] > 30]
    plain = [o for o in outs if o["boxes"][0, 0] < 30]
    assert flipped and plain
    np.testing.assert_allclose(plain[0]["boxes"][0], [4, 10, 16, 20])
    np.testing.assert_allclose(flipped[0]["boxes"][0], [60 - 16, 10, 60 - 4, 20])
    for out in (plain[0], flipped[0]):
        x1, y1, x2, y2 = out["boxes"][0].astype(int)
        assert out["masks"][0, y1:y2, x1:x2].all() and out["masks"][0].sum() == 120
        bright = denormalize(out["image"])[..., 0] > 127  # bilinear edges are 64 or 191
        np.testing.assert_array_equal(bright, out["masks"][0] > 0)


def test_too_many_instances_keep_the_largest_and_log(caplog):
    masks = np.zeros((5, 30, 30), np.uint8)
    boxes = []
    for k in range(5):  # instance k is a square of side 2 + 2k
        masks[k, : 2 + 2 * k, 6 * k : 6 * k + 2 + 2 * k] = 1
        boxes.append([6 * k, 0, 6 * k + 2 + 2 * k, 2 + 2 * k])
    element = {
        "image": np.zeros((30, 30, 3), np.uint8), "masks": masks,
        "boxes": np.array(boxes, np.float32), "classes": np.arange(1, 6, dtype=np.int32),
        "is_crowd": np.array([False, False, False, True, False]),
        "image_id": np.int64(9), "image_valid": np.bool_(True),
    }  # fmt: skip
    transform = InstanceTransform(size=(30, 30), max_instances=2, train=False)
    with caplog.at_level(logging.WARNING):
        out = transform.random_map(element, np.random.default_rng(0))
    # The crowd instance (class 4) is dropped; of the rest, the two largest are kept.
    assert out["classes"].tolist() == [3, 5]
    assert out["valid"].tolist() == [True, True]
    assert "more than max_instances=2" in caplog.text
    kept_crowd = InstanceTransform(size=(30, 30), max_instances=5, train=False, drop_crowd=False)
    assert kept_crowd.random_map(element, None)["classes"].tolist() == [1, 2, 3, 4, 5]


def test_shuffling_differs_per_epoch_and_covers_every_example(shapes_dir, tiny_shapes):
    loader = _loader(shapes_dir, tiny_shapes, num_epochs=2, batch_size=4, seed=4)
    ids = np.concatenate([b["image_id"] for b in loader])
    assert len(ids) == 48
    first, second = ids[:24], ids[24:]
    assert sorted(first) == sorted(second) == list(range(24))
    assert first.tolist() != second.tolist()
    assert first.tolist() != list(range(24))


def test_train_shards_are_disjoint(shapes_dir, tiny_shapes):
    ids = [
        set(np.concatenate([b["image_id"] for b in _loader(
            shapes_dir, tiny_shapes, num_epochs=1, shard_index=i, shard_count=2, batch_size=3
        )]).tolist())
        for i in range(2)
    ]  # fmt: skip
    assert len(ids[0]) == len(ids[1]) == 12 and not ids[0] & ids[1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_instances=0), "max_instances"),
        (dict(mask_format="rle"), "mask_format"),
        (dict(min_size=800), "min_size and max_size"),
    ],
)
def test_bad_arguments_raise_value_error(shapes_dir, tiny_shapes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _loader(shapes_dir, tiny_shapes, **kwargs)
