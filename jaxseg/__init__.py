"""jaxseg: FCN and Mask R-CNN segmentation in JAX/Flax, at torchvision parity."""

from jaxseg import ops

IGNORE_LABEL = 255
"""The label of pixels that no loss or metric counts (PASCAL VOC's object borders)."""

__all__ = ["IGNORE_LABEL", "ops"]
__version__ = "0.1.0"
