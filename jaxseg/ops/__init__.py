"""Pure `jax.numpy` operators for detection and segmentation (no parameters, no Flax).

Each op takes one image; lift it over a batch with `jax.vmap`. All work under `jax.jit`,
`jax.vmap` and `jax.grad`, and give the same numbers as their `torchvision.ops` namesakes.
"""

from jaxseg.ops.anchors import cell_anchors, generate_anchors, level_anchors
from jaxseg.ops.boxes import (
    BBOX_XFORM_CLIP,
    BoxCoder,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    small_boxes_mask,
)
from jaxseg.ops.masks import (
    DEFAULT_MASK_MAX_SAMPLING_RATIO,
    paste_masks_in_image,
    roi_mask_targets,
)
from jaxseg.ops.nms import NMS_METHODS, batched_nms, nms, segmented_nms
from jaxseg.ops.roi_align import (
    DEFAULT_MAX_SAMPLING_RATIO,
    adaptive_sampling_grid,
    fpn_levels,
    multiscale_roi_align,
    roi_align,
)
from jaxseg.ops.roi_pool import multiscale_roi_pool, roi_pool
from jaxseg.ops.tiled_nms import tiled_batched_nms, tiled_nms

__all__ = [
    "BBOX_XFORM_CLIP",
    "DEFAULT_MASK_MAX_SAMPLING_RATIO",
    "DEFAULT_MAX_SAMPLING_RATIO",
    "NMS_METHODS",
    "BoxCoder",
    "adaptive_sampling_grid",
    "batched_nms",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "cell_anchors",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "fpn_levels",
    "generate_anchors",
    "level_anchors",
    "multiscale_roi_align",
    "multiscale_roi_pool",
    "nms",
    "paste_masks_in_image",
    "roi_align",
    "roi_mask_targets",
    "roi_pool",
    "segmented_nms",
    "small_boxes_mask",
    "tiled_batched_nms",
    "tiled_nms",
]
