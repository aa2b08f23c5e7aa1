"""torchvision -> jaxseg weights: `from_torchvision`, and `python -m jaxseg.convert`.

    from jaxseg.convert import from_torchvision, preprocessing, read_state_dict

    model, variables = from_torchvision(read_state_dict("fcn_resnet50.pth"), "fcn_resnet50")
    logits = model.apply(variables, images)["out"]  # images [B, H, W, 3], see preprocessing()

torch is needed only to read `.pth` files (`pip install 'jaxseg[torch]'`); `.safetensors`
files and in-memory state dicts of NumPy arrays need nothing beyond jaxseg.
"""

from jaxseg.convert.archs import ARCHS, Arch, get_arch, guess_arch
from jaxseg.convert.categories import COCO_V1_CATEGORIES, VOC_CATEGORIES, class_names
from jaxseg.convert.checkpoint import METADATA_FILE, load_converted, save_converted
from jaxseg.convert.converter import Conversion, convert_state_dict, from_torchvision
from jaxseg.convert.preprocessing import IMAGENET_MEAN, IMAGENET_STD, preprocessing
from jaxseg.convert.reading import INSTALL_HINT, read_state_dict

__all__ = [
    "ARCHS",
    "COCO_V1_CATEGORIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INSTALL_HINT",
    "METADATA_FILE",
    "VOC_CATEGORIES",
    "Arch",
    "Conversion",
    "class_names",
    "convert_state_dict",
    "from_torchvision",
    "get_arch",
    "guess_arch",
    "load_converted",
    "preprocessing",
    "read_state_dict",
    "save_converted",
]
