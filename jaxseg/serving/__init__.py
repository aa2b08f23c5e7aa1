"""The host side of serving a model: images into fixed canvases, results back to each image.

NumPy only (pycocotools for RLE, on request): no Flax, no model code, so that a loaded
export (`jaxseg.export.load`) uses it without building a model.

    plan = place(image.shape[:2], preprocessing, canvas=(800, 1344))   # scale, sizes
    batch = pack([image], [plan], canvas=(800, 1344), batch_size=4)   # padded batch
    results = predict_in_batches(images, run, ...)                   # both together
"""

from jaxseg.serving.batching import predict_in_batches
from jaxseg.serving.canvas import (
    SIZE_DIVISIBLE,
    Placement,
    canvas_multiple,
    check_canvas,
    check_images,
    input_scale,
    pack,
    parse_canvas,
    place,
)
from jaxseg.serving.results import encode_rle, instance_result, semantic_result

__all__ = [
    "SIZE_DIVISIBLE",
    "Placement",
    "canvas_multiple",
    "check_canvas",
    "check_images",
    "encode_rle",
    "input_scale",
    "instance_result",
    "pack",
    "parse_canvas",
    "place",
    "predict_in_batches",
    "semantic_result",
]
