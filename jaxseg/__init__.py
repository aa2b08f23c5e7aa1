"""jaxseg: FCN and Mask R-CNN segmentation in JAX/Flax, at torchvision parity."""

from jaxseg import ops

__all__ = ["ops"]
__version__ = "0.1.0"
