"""COCO box and mask AP through pycocotools, the official computation.

    ground_truth = coco_ground_truth(records, category_ids=...)     # a COCO dataset dict
    results = detections_to_coco(image_id, boxes, scores, classes, masks)  # per image
    metrics = coco_evaluate(ground_truth, results)  # {'bbox_AP': ..., 'segm_AP75': ...}

Everything is in original-image pixels: ground truth as stored in the dataset, detections
mapped back from the network's canvas (boxes divided by the loader's `scale`, masks
pasted at the original resolution, see `paste_masks_original`). Masks are run-length
encoded (RLE) on both sides.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxseg import ops

__all__ = [
    "IOU_TYPES",
    "METRIC_NAMES",
    "coco_evaluate",
    "coco_ground_truth",
    "detections_to_coco",
    "paste_masks_original",
]

IOU_TYPES = ("bbox", "segm")
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""The first six of `COCOeval.stats`, in order; metrics are named `<iou type>_<name>`."""

_BUCKET = 64  # pasting canvases are rounded up to this, so few image sizes compile
_MIN_DETECTIONS = 8  # and detection counts to a power of two, at least this


def _rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """Returns the COCO RLEs (counts as str) of bool / uint8 masks [N, H, W]."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(np.transpose(masks, (1, 2, 0)).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_ground_truth(
    records: Iterable[dict[str, Any]],
    *,
    num_classes: int,
    category_ids: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Returns a COCO-format dataset dict (images, annotations, categories) of `records`.

    Args:
      records: per image, as `jaxseg.data` adapters give them: `image_id`, `image`
        [H, W, 3] (or `size` (H, W)), `boxes` [N, 4] xyxy, `classes` [N] 1..K, `masks`
        [N, H, W] 0/1, optional `is_crowd` [N]; original resolution.
      num_classes: K.
      category_ids: the COCO category id of each class 1..K (default: the class ids).
      class_names: K names, for the categories' `name`.

    An annotation's `area` is its mask's pixel count (COCO's convention: the small /
    medium / large ranges of both box and mask AP use it); masks are RLE-encoded.
    """
    ids = list(category_ids) if category_ids is not None else list(range(1, num_classes + 1))
    if len(ids) != num_classes:
        raise ValueError(f"need {num_classes} category ids, got {len(ids)}")
    names = list(class_names) if class_names is not None else [str(i) for i in ids]
    images, annotations = [], []
    for record in records:
        image_id = int(record["image_id"])
        height, width = record["size"] if "size" in record else np.shape(record["image"])[:2]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        masks = np.asarray(record["masks"], np.uint8).reshape(-1, int(height), int(width))
        classes = np.asarray(record["classes"]).reshape(-1)
        crowd = np.asarray(record.get("is_crowd", np.zeros(len(classes), bool))).reshape(-1)
        for box, cls, rle, mask, is_crowd in zip(
            _xywh(record["boxes"]), classes, _rle(masks), masks, crowd, strict=True
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(ids[int(cls) - 1]),
                    "bbox": [float(v) for v in box],
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "iscrowd": int(bool(is_crowd)),
                }
            )
    categories = [{"id": int(i), "name": n} for i, n in zip(ids, names, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}


@functools.partial(jax.jit, static_argnames="canvas")
def _paste(masks, boxes, *, canvas):
    return ops.paste_masks_in_image(masks, boxes, canvas) >= 0.5


def paste_masks_original(
    masks: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """Returns bool [D, H, W]: mask probabilities [D, M, M] pasted into their boxes, >= 0.5.

    Args:
      masks: [D, M, M] probabilities of each detection's class inside its box.
      boxes: [D, 4] xyxy in the pixels of the (original) image.
      image_size: (H, W) of the image.

    torchvision's `paste_masks_in_image` and threshold 0.5. The canvas is rounded up to a
    multiple of 64 and cropped, and the detections are padded to a power of two (at least 8),
    so that images of many sizes and detection counts share few compilations.
    """
    height, width = int(image_size[0]), int(image_size[1])
    count = len(masks)
    if count == 0:
        return np.zeros((0, height, width), bool)
    canvas = (-(-height // _BUCKET) * _BUCKET, -(-width // _BUCKET) * _BUCKET)
    padded = max(_MIN_DETECTIONS, 1 << (count - 1).bit_length())
    padding = ((0, padded - count), (0, 0), (0, 0))
    masks = np.pad(np.asarray(masks, np.float32), padding)
    boxes = np.pad(np.asarray(boxes, np.float32), padding[:2])
    pasted = _paste(masks, boxes, canvas=canvas)
    return np.asarray(pasted)[:count, :height, :width]


def detections_to_coco(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    category_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Returns COCO results (`image_id`, `category_id`, `bbox`, `score`, `segmentation`).

    Args:
      image_id: the image's id in the ground truth.
      boxes: [D, 4] xyxy, original-image pixels (valid detections only).
      scores: [D]; classes: [D] 1..K.
      masks: bool [D, H, W] at the original resolution, or None for boxes only.
      category_ids: the COCO category id of each class 1..K (default: the class ids).
    """
    classes = np.asarray(classes).reshape(-1)
    rles = _rle(np.asarray(masks)) if masks is not None else [None] * len(classes)
    results = []
    for box, score, cls, rle in zip(
        _xywh(boxes), np.asarray(scores).reshape(-1), classes, rles, strict=True
    ):
        result = {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(cls) - 1] if category_ids else cls),
            "bbox": [float(v) for v in box],
            "score": float(score),
        }
        if rle is not None:
            result["segmentation"] = rle
        results.append(result)
    return results


def coco_evaluate(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    *,
    iou_types: Sequence[str] = IOU_TYPES,
    verbose: bool = False,
) -> dict[str, float]:
    """Returns `{'<iou type>_<name>': value}` for `METRIC_NAMES`, by pycocotools' COCOeval.

    A metric without ground truth in its range (e.g. APl on small images) is NaN, where
    pycocotools prints -1; with no detections at all every AP is 0. pycocotools' own
    printing is shown only if `verbose`.
    """
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou type must be one of {IOU_TYPES}, got {iou_type!r}")
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    metrics = {}
    with quiet:
        coco_gt = COCO()
        coco_gt.dataset = ground_truth
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(list(results)) if results else None
        for iou_type in iou_types:
            if coco_dt is None:
                stats = np.zeros(len(METRIC_NAMES))
            else:
                evaluator = COCOeval(coco_gt, coco_dt, iou_type)
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
                stats = evaluator.stats
            for name, value in zip(METRIC_NAMES, stats[: len(METRIC_NAMES)], strict=True):
                metrics[f"{iou_type}_{name}"] = float(value) if value >= 0 else float("nan")
    return metrics
