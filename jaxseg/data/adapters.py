"""Adapters: one decoded TFDS record -> jaxseg's canonical example.

A canonical semantic example is
  image: uint8 [H, W, 3]; label: uint8 [H, W] class ids 0..K-1, 255 = ignore; image_id: int64.
A canonical instance example is
  image: uint8 [H, W, 3]; boxes: float32 [N, 4] xyxy absolute pixels of the image;
  classes: int32 [N] in 1..K; masks: uint8 [N, H, W] 0/1; is_crowd: bool [N]; image_id: int64.

Each adapter is a plain function `(index, record) -> example`, where `index` is the record's
position in its split (used as the image id by datasets that have none).
"""

from __future__ import annotations

import numpy as np

IGNORE = 255

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

PET_CLASS_NAMES = ("background", "pet")

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Cityscapes labelIds (0..33) of the 19 evaluated classes, in trainId order.
_CITYSCAPES_EVAL_LABEL_IDS = (
    7,
    8,
    11,
    12,
    13,
    17,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    31,
    32,
    33,
)
CITYSCAPES_LABEL_TO_TRAIN_ID = np.full(256, IGNORE, np.uint8)
CITYSCAPES_LABEL_TO_TRAIN_ID[list(_CITYSCAPES_EVAL_LABEL_IDS)] = np.arange(19, dtype=np.uint8)
"""uint8 [256] lookup table: Cityscapes labelId -> trainId (255 for void / not evaluated)."""

# COCO panoptic (as in TFDS `coco/2017_panoptic`): the 80 thing categories come first
# (category ids 1..90), followed by the 53 stuff categories.
COCO_PANOPTIC_NUM_THINGS = 80


def _image(record) -> np.ndarray:
    image = np.asarray(record["image"])
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return image


def _label_map(array) -> np.ndarray:
    """Returns uint8 [H, W] from a decoded [H, W, 1] or [H, W] label image."""
    array = np.asarray(array)
    return array[..., 0] if array.ndim == 3 else array


def jaxseg_semantic(index: int, record) -> dict:
    """Adapter for jaxseg's own semantic builders (`jaxseg_shapes`, `jaxseg_voc2012`)."""
    del index
    return {
        "image": _image(record),
        "label": _label_map(record["label"]),
        "image_id": np.int64(record["image_id"]),
    }


def jaxseg_instance(index: int, record) -> dict:
    """Adapter for jaxseg's own instance builders (`jaxseg_shapes`, `jaxseg_coco`)."""
    del index
    image = _image(record)
    objects = record["objects"]
    height, width = image.shape[:2]
    num = len(objects["label"])
    masks = np.zeros((num, height, width), np.uint8)
    for k, mask in enumerate(objects["mask"]):
        masks[k] = _label_map(mask)
    return {
        "image": image,
        "boxes": np.asarray(objects["box"], np.float32).reshape(num, 4),
        "classes": np.asarray(objects["label"], np.int32).reshape(num),
        "masks": masks,
        "is_crowd": np.asarray(objects["is_crowd"], bool).reshape(num),
        "image_id": np.int64(record["image_id"]),
    }


def oxford_iiit_pet(index: int, record) -> dict:
    """Adapter for TFDS `oxford_iiit_pet`: trimap 1 pet, 2 background, 3 border (ignored)."""
    trimap = _label_map(record["segmentation_mask"])
    label = np.full(trimap.shape, IGNORE, np.uint8)
    label[trimap == 1] = 1
    label[trimap == 2] = 0
    return {"image": _image(record), "label": label, "image_id": np.int64(index)}


def cityscapes(index: int, record) -> dict:
    """Adapter for TFDS `cityscapes/semantic_segmentation`: labelIds -> the 19 trainIds."""
    label_ids = _label_map(record["segmentation_label"])
    return {
        "image": _image({"image": record["image_left"]}),
        "label": CITYSCAPES_LABEL_TO_TRAIN_ID[label_ids],
        "image_id": np.int64(index),
    }


def _tfds_boxes_to_xyxy(bbox, height: int, width: int) -> np.ndarray:
    """Returns float32 [N, 4] xyxy pixels from TFDS BBoxFeature [N, 4] normalised yxyx."""
    bbox = np.asarray(bbox, np.float32).reshape(-1, 4)
    return (bbox[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float32)).astype(
        np.float32
    )


def lvis(index: int, record) -> dict:
    """Adapter for TFDS `lvis`: per-instance masks; LVIS label l becomes class l + 1."""
    del index
    image = _image(record)
    height, width = image.shape[:2]
    objects = record["objects"]
    num = len(objects["label"])
    masks = np.zeros((num, height, width), np.uint8)
    for k, mask in enumerate(objects["segmentation"]):
        masks[k] = _label_map(mask) > 0
    return {
        "image": image,
        "boxes": _tfds_boxes_to_xyxy(objects["bbox"], height, width),
        "classes": np.asarray(objects["label"], np.int32).reshape(num) + 1,
        "masks": masks,
        "is_crowd": np.zeros(num, bool),
        "image_id": np.int64(record["image/id"]),
    }


def coco_panoptic_things(index: int, record) -> dict:
    """Adapter for TFDS `coco/2017_panoptic`: instances of the 80 thing classes (1..80).

    Segment ids are decoded from the panoptic PNG as R + 256 G + 256^2 B; stuff segments
    are dropped; crowd segments are kept with `is_crowd` set.
    """
    del index
    image = _image(record)
    height, width = image.shape[:2]
    panoptic = np.asarray(record["panoptic_image"]).astype(np.int64)
    segment_ids = panoptic[..., 0] + 256 * panoptic[..., 1] + 256 * 256 * panoptic[..., 2]
    objects = record["panoptic_objects"]
    labels = np.asarray(objects["label"], np.int64).reshape(-1)
    things = np.flatnonzero(labels < COCO_PANOPTIC_NUM_THINGS)
    ids = np.asarray(objects["id"], np.int64).reshape(-1)[things]
    masks = (segment_ids[None] == ids[:, None, None]).astype(np.uint8)
    return {
        "image": image,
        "boxes": _tfds_boxes_to_xyxy(objects["bbox"], height, width)[things],
        "classes": (labels[things] + 1).astype(np.int32),
        "masks": masks.reshape(len(things), height, width),
        "is_crowd": np.asarray(objects["is_crowd"], bool).reshape(-1)[things],
        "image_id": np.int64(record["image/id"]),
    }
