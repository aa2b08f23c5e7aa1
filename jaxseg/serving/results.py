"""A compiled prediction function's outputs for one image, back in the image's own pixels.

The function gives results in content pixels (see `jaxseg.serving.canvas`): class maps and
masks on the whole canvas, boxes clipped to the content. Here they are cut to the content,
repeated `shrink` times if the image was shrunk on the host, and cut to the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxseg.serving.canvas import Placement

__all__ = ["encode_rle", "instance_result", "semantic_result"]


def _own_pixels(maps: np.ndarray, placement: Placement) -> np.ndarray:
    """Returns [..., h, w]: `maps` [..., H, W] in content pixels cut and repeated to the image."""
    rows, cols = placement.content_size
    maps = maps[..., :rows, :cols]
    if placement.shrink > 1:
        maps = np.repeat(np.repeat(maps, placement.shrink, axis=-2), placement.shrink, axis=-1)
    return maps[..., : placement.size[0], : placement.size[1]]


def semantic_result(outputs: dict[str, np.ndarray], index: int, placement: Placement) -> dict:
    """Returns `{'classes': int32 [h, w], 'size', 'input_size'}` of batch slot `index`."""
    return {
        "classes": np.ascontiguousarray(_own_pixels(outputs["classes"][index], placement)),
        "size": placement.size,
        "input_size": placement.input_size,
    }


def instance_result(
    outputs: dict[str, np.ndarray], index: int, placement: Placement, *, rle: bool = False
) -> dict[str, Any]:
    """Returns the detections of batch slot `index` kept by the score threshold, best first.

    Returns:
      `boxes` float32 [N, 4] xyxy in the image's pixels, `scores` float32 [N], `classes`
      int32 [N] (1..K), `masks` bool [N, h, w], `size`, `input_size`, and with `rle` also
      `rle`: N COCO run-length encodings (`encode_rle`).
    """
    keep = np.flatnonzero(outputs["keep"][index])
    height, width = placement.size
    boxes = outputs["boxes"][index, keep].astype(np.float32) * placement.shrink
    boxes = np.clip(boxes, 0, np.asarray([width, height, width, height], np.float32))
    result = {
        "boxes": boxes,
        "scores": outputs["scores"][index, keep].astype(np.float32),
        "classes": outputs["classes"][index, keep].astype(np.int32),
        "masks": np.ascontiguousarray(_own_pixels(outputs["masks"][index, keep], placement)),
        "size": placement.size,
        "input_size": placement.input_size,
    }
    if rle:
        result["rle"] = encode_rle(result["masks"])
    return result


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """Returns a COCO RLE `{'size': [h, w], 'counts': str}` per mask of bool [N, h, w].

    Raises:
      ImportError: without pycocotools (a jaxseg dependency; an export's host may lack it).
    """
    try:
        from pycocotools import mask as mask_util
    except ImportError as e:
        raise ImportError("RLE masks need pycocotools: pip install pycocotools") from e
    encoded = mask_util.encode(np.asfortranarray(np.asarray(masks, np.uint8).transpose(1, 2, 0)))
    return [{"size": list(e["size"]), "counts": e["counts"].decode("ascii")} for e in encoded]
