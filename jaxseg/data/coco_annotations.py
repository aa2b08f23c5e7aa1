"""Reading COCO-format instance annotations into checked per-image instances.

Handles what real annotation files contain: polygons (several per object) and RLE
(compressed or not), `iscrowd`, images without annotations, category ids that are not
contiguous. Defects are repaired where the intent is clear (boxes clipped to the image)
and otherwise the annotation is skipped and counted (see `SkipCounter`).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
from pycocotools import mask as mask_utils

from jaxseg.data.skips import SkipCounter

# The repair counted (as "repaired: ...") for a box of zero or negative size with a mask.
BOX_FROM_MASK = "box of zero or negative width or height taken from the mask"


def load_json(path: str | os.PathLike) -> dict:
    """Returns a COCO annotation file's content; errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing COCO annotation file: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    for key in ("images", "categories"):
        if key not in data:
            raise ValueError(f"{path} has no {key!r} list; is it a COCO instances file?")
    data.setdefault("annotations", [])
    return data


class CategoryMap:
    """COCO category ids -> contiguous instance classes 1..K, in increasing id order."""

    def __init__(self, categories: list[dict]):
        ordered = sorted(categories, key=lambda c: c["id"])
        ids = [int(c["id"]) for c in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids in {ids}")
        self.category_ids: tuple[int, ...] = tuple(ids)
        self.names: tuple[str, ...] = tuple(str(c["name"]) for c in ordered)
        self._class_of = {cid: k + 1 for k, cid in enumerate(ids)}

    def class_of(self, category_id) -> int | None:
        """Returns the class 1..K of `category_id`, or None if unknown."""
        return self._class_of.get(category_id)


def annotations_by_image(data: dict) -> dict[int, list[dict]]:
    """Returns {image id: [annotation, ...]} (images without annotations are absent)."""
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    return by_image


def decode_segmentation(segmentation, height: int, width: int, where: str, skips: SkipCounter):
    """Returns uint8 [H, W] 0/1 mask of a COCO `segmentation`, or None (skip counted).

    Polygons with fewer than 3 points are dropped (counted); an object left with none is
    skipped. RLE whose size differs from the image is skipped.
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list | tuple)]
        good = [p for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
        if len(good) < len(segmentation):
            skips.skip("polygon with fewer than 3 points dropped", where)
        if not good:
            skips.skip("annotation without a usable polygon", where)
            return None
        rle = mask_utils.merge(
            mask_utils.frPyObjects([list(map(float, p)) for p in good], height, width)
        )
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            skips.skip(
                f"RLE size {segmentation['size']} differs from image size {[height, width]}",
                where,
            )
            return None
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, height, width)
    else:
        skips.skip("annotation without segmentation", where)
        return None
    with warnings.catch_warnings():
        # pycocotools 2.0.x with NumPy 2 warns about its own `__array__(copy=...)` call.
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def image_instances(
    annotations: list[dict],
    height: int,
    width: int,
    categories: CategoryMap,
    where: str,
    skips: SkipCounter,
    *,
    box_repairs: dict | None = None,
) -> dict:
    """Returns the checked instances of one image.

    Args:
      annotations: the image's COCO annotations.
      height, width: the image's size.
      categories: category ids -> classes.
      where: the image file, for messages.
      skips: counts what is skipped or repaired.
      box_repairs: {"count": int, "example": str | None}, updated for each box taken
        from its mask because the annotated one has zero or negative width or height
        (the builder warns once per build with the count and the first example).

    Returns:
      dict with box float32 [N, 4] xyxy pixels (the annotated box clipped to the image;
      the mask's box when there is none, or when the annotated box has no extent), label
      int64 [N] classes 1..K, mask uint8 [N, H, W] 0/1, is_crowd bool [N]. A box outside
      the image is skipped (the mask, decoded inside the image, contradicts it).
    """
    boxes, labels, masks, crowd = [], [], [], []
    for ann in annotations:
        ann_where = f"{where} annotation {ann.get('id')}"
        cls = categories.class_of(ann.get("category_id"))
        if cls is None:
            skips.skip(f"unknown category id {ann.get('category_id')}", ann_where)
            continue
        mask = decode_segmentation(ann.get("segmentation"), height, width, ann_where, skips)
        if mask is None:
            continue
        if not mask.any():
            skips.skip("empty mask", ann_where)
            continue
        box = None
        if "bbox" in ann and len(ann["bbox"]) == 4:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w > 0 and h > 0:
                box = np.array([x, y, x + w, y + h], np.float32)
            else:
                # A box without extent next to a valid mask is a writer's slip (xyxy stored
                # as xywh, corners swapped): the mask says where the object is.
                skips.repair(BOX_FROM_MASK, ann_where, log=False)
                if box_repairs is not None:
                    box_repairs["count"] += 1
                    box_repairs["example"] = box_repairs["example"] or (
                        f"annotation {ann.get('id')} of {where}, bbox {list(ann['bbox'])}"
                    )
        if box is None:
            ys, xs = np.nonzero(mask)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        box = np.clip(box, 0, np.array([width, height, width, height], np.float32))
        if box[2] <= box[0] or box[3] <= box[1]:
            skips.skip("box outside the image", ann_where)
            continue
        boxes.append(box)
        labels.append(cls)
        masks.append(mask)
        crowd.append(bool(ann.get("iscrowd", 0)))
    return {
        "box": np.array(boxes, np.float32).reshape(-1, 4),
        "label": np.array(labels, np.int64),
        "mask": np.array(masks, np.uint8).reshape(-1, height, width),
        "is_crowd": np.array(crowd, bool),
    }
