"""The class names of torchvision's pretrained weights, for pictures and JSON of converted models.

- `maskrcnn_resnet50_fpn` `COCO_V1`: 91 entries, index = torchvision's label (0 the
  background; 'N/A' where COCO's category ids skip a number), as `weights.meta['categories']`;
- `fcn_resnet*` `COCO_WITH_VOC_LABELS_V1`: the 21 PASCAL VOC classes (0 the background).
"""

from __future__ import annotations

from jaxseg.convert.archs import get_arch

__all__ = ["COCO_V1_CATEGORIES", "VOC_CATEGORIES", "class_names"]

COCO_V1_CATEGORIES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

VOC_CATEGORIES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def class_names(arch: str, num_classes: int) -> tuple[str, ...]:
    """Returns the names of a converted model's classes, indexed by class id.

    Semantic models (`fcn_resnet*`): K names for ids 0..K-1; Mask R-CNN: K + 1 names,
    index 0 the background. torchvision's names where the class count is the pretrained
    weights' (21 VOC classes, 90 COCO classes), else 'class k'.

    Raises:
      ValueError: for an arch without class outputs (a backbone).
    """
    get_arch(arch)
    if arch.startswith("fcn_"):
        known, count = VOC_CATEGORIES, num_classes
    elif arch.startswith("maskrcnn_"):
        known, count = COCO_V1_CATEGORIES, num_classes + 1
    else:
        raise ValueError(f"{arch} is a backbone: it has no classes")
    if count == len(known):
        return known
    return ("__background__", *(f"class {k}" for k in range(1, count)))
