"""COCO evaluation on hand-made detections: perfect ones score 1, shifted ones as computed."""

import math

import numpy as np
import pytest

from jaxseg import ops
from jaxseg.evaluation import coco
from jaxseg.evaluation.coco import (
    coco_evaluate,
    coco_ground_truth,
    detections_to_coco,
    paste_masks_original,
)

SIZE = (40, 60)  # H, W of every image


def _box_mask(box, size=SIZE):
    mask = np.zeros(size, np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 1
    return mask


def _records():
    """Two images: one square and one bar (classes 1 and 2); a 20 x 20 square and a 30 x 6 bar."""
    boxes = [np.array([[10, 10, 30, 30]]), np.array([[20, 5, 50, 11], [2, 30, 12, 38]])]
    classes = [np.array([1]), np.array([2, 1])]
    return [
        {
            "image_id": image_id,
            "size": SIZE,
            "boxes": b.astype(np.float32),
            "classes": c,
            "masks": np.stack([_box_mask(box) for box in b]),
        }
        for image_id, (b, c) in enumerate(zip(boxes, classes, strict=True), start=7)
    ]


def _results(records, shift=0):
    results = []
    for record in records:
        boxes = record["boxes"] + np.array([shift, 0, shift, 0], np.float32)
        masks = np.stack([_box_mask(box.astype(int)) for box in boxes]).astype(bool)
        scores = np.linspace(0.9, 0.8, len(boxes))
        results += detections_to_coco(record["image_id"], boxes, scores, record["classes"], masks)
    return results


def test_perfect_detections_score_one():
    records = _records()
    gt = coco_ground_truth(records, num_classes=2, class_names=("square", "bar"))
    assert [a["area"] for a in gt["annotations"]] == [400.0, 180.0, 80.0]
    metrics = coco_evaluate(gt, _results(records))
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs"):
            assert metrics[f"{iou_type}_{name}"] == pytest.approx(1.0)
        # No object is medium or large: pycocotools' -1, reported as NaN.
        assert math.isnan(metrics[f"{iou_type}_APm"]) and math.isnan(metrics[f"{iou_type}_APl"])


def test_shifted_detections():
    # Every box and mask 4 px to the right. IoUs: square 320/480 = 0.667, small box
    # 48/112 = 0.43, bar 156/204 = 0.765.
    # Class 1 (square, score 0.9, and small box, 0.8): at IoU thresholds 0.50..0.65 (4 of
    # 10) the square is a true positive ranked first, the small box a false positive:
    # precision 1 up to recall 0.5, i.e. 51 of COCO's 101 recall points; 0 above.
    # Class 2 (bar): a true positive at thresholds 0.50..0.75 (6 of 10), AP 1 there.
    records = _records()
    gt = coco_ground_truth(records, num_classes=2)
    metrics = coco_evaluate(gt, _results(records, shift=4))
    half = 51 / 101
    for iou_type in ("bbox", "segm"):
        assert metrics[f"{iou_type}_AP"] == pytest.approx((half * 4 / 10 + 6 / 10) / 2)
        assert metrics[f"{iou_type}_AP50"] == pytest.approx((half + 1) / 2)
        assert metrics[f"{iou_type}_AP75"] == pytest.approx(0.5)


def test_no_detections_score_zero():
    gt = coco_ground_truth(_records(), num_classes=2)
    metrics = coco_evaluate(gt, [])
    assert set(metrics) == {
        f"{t}_{n}" for t in ("bbox", "segm") for n in ("AP", "AP50", "AP75", "APs", "APm", "APl")
    }
    assert all(v == 0.0 for v in metrics.values())


def test_paste_masks_original_fills_the_box():
    masks = np.ones((2, 28, 28), np.float32)
    boxes = np.array([[10, 5, 30, 25], [0, 0, 0, 0]], np.float32)
    masks[1] = 0.0
    pasted = paste_masks_original(masks, boxes, (70, 50))
    assert pasted.shape == (2, 70, 50) and pasted.dtype == bool
    # torchvision's paste: the mask fades out over its padding, so the last row and
    # column of the box fall below 0.5.
    ys, xs = np.nonzero(pasted[0])
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (10, 5, 29, 24)
    assert pasted[0, 5:25, 10:30].all()
    assert not pasted[1].any()


def test_category_ids_map_classes():
    records = _records()
    gt = coco_ground_truth(records, num_classes=2, category_ids=(18, 44))
    assert sorted(c["id"] for c in gt["categories"]) == [18, 44]
    results = detections_to_coco(7, records[0]["boxes"], [0.5], [1], category_ids=(18, 44))
    assert results[0]["category_id"] == 18 and "segmentation" not in results[0]
    metrics = coco_evaluate(gt, results, iou_types=("bbox",))
    assert set(metrics) == {f"bbox_{n}" for n in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


def test_paste_masks_original_compiles_once_for_similar_images():
    rng = np.random.default_rng(0)
    coco._paste.clear_cache()
    for count, size in [(1, (70, 50)), (5, (100, 64)), (8, (128, 60)), (3, (65, 33))]:
        masks = rng.uniform(size=(count, 28, 28)).astype(np.float32)
        boxes = np.tile(np.array([[3, 4, 30, 40]], np.float32), (count, 1))
        pasted = paste_masks_original(masks, boxes, size)
        assert pasted.shape == (count, *size)
        expected = np.asarray(ops.paste_masks_in_image(masks, boxes, size)) >= 0.5
        np.testing.assert_array_equal(pasted, expected)
    assert coco._paste._cache_size() == 1  # 8 detections on a 128 x 64 canvas
