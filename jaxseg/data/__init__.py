"""Datasets and input pipelines: TFDS builders read through `tfds.data_source`, fed by grain.

Importing this package registers jaxseg's TFDS builders (`jaxseg_shapes`,
`jaxseg_voc2012`, `jaxseg_coco`). Nothing here imports TensorFlow.

    from jaxseg import data
    loader = data.make_semantic_loader(
        "jaxseg_shapes", "train", batch_size=16, image_size=64, train=True, seed=0)
    batch = next(iter(loader))  # {"image": [16, 64, 64, 3] float32, "label": [16, 64, 64] int32}
"""

from jaxseg import IGNORE_LABEL
from jaxseg.data.catalog import ClassInfo, DatasetInfo, dataset_info, dataset_names
from jaxseg.data.coco_builder import CocoFormatConfig, JaxsegCoco, custom_config
from jaxseg.data.instance_pipeline import make_instance_loader
from jaxseg.data.semantic_pipeline import make_semantic_loader
from jaxseg.data.shapes_builder import JaxsegShapes, ShapesConfig
from jaxseg.data.sources import SourceChangedError
from jaxseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
from jaxseg.data.voc_builder import JaxsegVoc2012, VocConfig

__all__ = [
    "IGNORE_LABEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassInfo",
    "CocoFormatConfig",
    "DatasetInfo",
    "JaxsegCoco",
    "JaxsegShapes",
    "JaxsegVoc2012",
    "ShapesConfig",
    "SourceChangedError",
    "VocConfig",
    "custom_config",
    "dataset_info",
    "dataset_names",
    "denormalize",
    "make_instance_loader",
    "make_semantic_loader",
]
