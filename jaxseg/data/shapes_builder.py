"""`jaxseg_shapes`: the embedded synthetic dataset as a TFDS builder (no download).

    import jaxseg.data  # registers the builder
    source = tfds.data_source("jaxseg_shapes/small", split="train")  # generated on first use

Each example holds the image, its semantic label map and its instances (boxes, classes,
masks), so the same dataset serves FCN and Mask R-CNN. Sizes and resolution come from the
builder config; a new config can be passed directly:

    tfds.builder("jaxseg_shapes", config=ShapesConfig(name="tiny", image_size=48, ...))
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import tensorflow_datasets as tfds

from jaxseg.data import features, shapes
from jaxseg.data.image_io import encode_png
from jaxseg.data.tfds_compat import Builder

_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """A size of the shapes dataset.

    Attributes:
      image_size: side of the square images, pixels.
      num_train, num_validation, num_test: examples per split.
      max_objects: most objects per image (1..max_objects are placed).
      min_extent, max_extent, bar_width: object sizes (see `shapes.generate_scene`).
      class_colours: colour objects by class on a grey background (`shapes.generate_scene`).
      seed: generation seed; the data are a pure function of the config.
    """

    image_size: int = 64
    num_train: int = 640
    num_validation: int = 128
    num_test: int = 128
    max_objects: int = 6
    min_extent: float = 2.5
    max_extent: float = 0.2
    bar_width: tuple[float, float] = (1.0, 3.0)
    class_colours: bool = False
    seed: int = 0


class JaxsegShapes(Builder):
    """Synthetic circles, squares, triangles and thin bars on textured backgrounds."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First release.",
        "1.1.0": "`fcn`: objects coloured by class on grey backgrounds.",
        "1.2.0": "The same data; the build records its generator settings.",
    }
    BUILDER_CONFIGS: ClassVar[list] = [
        ShapesConfig(
            name="small",
            description="64x64 px, 640 train / 128 val / 128 test: a CPU-sized FCN demo.",
        ),
        ShapesConfig(
            name="fcn",
            description=(
                "128x128 px, 1000 / 200 / 200, objects of radius 6 to 32 px and bars 4 to 8 px "
                "wide, coloured by class: big enough for a stride-8 FCN to outline, too fine "
                "for a stride-32 one."
            ),
            image_size=128,
            num_train=1000,
            num_validation=200,
            num_test=200,
            max_objects=6,
            min_extent=6.0,
            max_extent=0.25,
            bar_width=(4.0, 8.0),
            class_colours=True,
        ),
        ShapesConfig(
            name="medium",
            description="128x128 px, 2000 / 256 / 256, up to 8 objects: the Mask R-CNN demo.",
            image_size=128,
            num_train=2000,
            num_validation=256,
            num_test=256,
            max_objects=8,
        ),
        ShapesConfig(
            name="instance",
            description=(
                "64x64 px, 2000 / 200 / 200, up to 4 objects of radius 5 to 19 px and bars 3 "
                "to 6 px wide: the CPU-sized Mask R-CNN demo (objects big enough for 28x28 "
                "masks to be judged at IoU 0.75)."
            ),
            image_size=64,
            num_train=2000,
            num_validation=200,
            num_test=200,
            max_objects=4,
            min_extent=5.0,
            max_extent=0.3,
            bar_width=(3.0, 6.0),
        ),
        ShapesConfig(
            name="large",
            description="256x256 px, 10000 / 500 / 500, up to 12 objects.",
            image_size=256,
            num_train=10000,
            num_validation=500,
            num_test=500,
            max_objects=12,
        ),
    ]
    DEFAULT_CONFIG_NAME = "small"

    def _info(self) -> tfds.core.DatasetInfo:
        feature_dict = features.semantic_features()
        feature_dict.update(features.instance_features())
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(feature_dict),
            metadata=tfds.core.MetadataDict(
                semantic_class_names=list(shapes.CLASS_NAMES),
                instance_class_names=list(shapes.CLASS_NAMES[1:]),
            ),
        )

    def source(self, manual_dir=None) -> dict:
        """Returns the generator settings of this config (`jaxseg.data.sources`).

        A build of a config name made with other settings (a `ShapesConfig` of the same
        name with another size or seed) is then refused instead of reused.
        """
        del manual_dir  # generated, not read
        config = self.builder_config
        base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
        settings = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name not in base
        }
        settings["bar_width"] = list(settings["bar_width"])
        return {
            "paths": {},
            "fingerprints": {"generator settings": json.dumps(settings, sort_keys=True)},
        }

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        self.info.metadata["source"] = self.source()
        config = self.builder_config
        sizes = (config.num_train, config.num_validation, config.num_test)
        return {
            split: self._generate_examples(split_index, num)
            for split_index, (split, num) in enumerate(zip(_SPLITS, sizes, strict=True))
            if num > 0
        }

    def _generate_examples(self, split_index: int, num_examples: int):
        config = self.builder_config
        for index in range(num_examples):
            scene = shapes.generate_scene(
                config.seed,
                split_index,
                index,
                image_size=config.image_size,
                max_objects=config.max_objects,
                min_extent=config.min_extent,
                max_extent=config.max_extent,
                bar_width=tuple(config.bar_width),
                class_colours=config.class_colours,
            )
            yield (
                index,
                {
                    "image": encode_png(scene.image),
                    "label": encode_png(scene.label),
                    "image_id": index,
                    "file_name": "",
                    "objects": {
                        "box": scene.boxes,
                        "label": scene.classes,
                        "mask": [encode_png(m) for m in scene.masks],
                        "is_crowd": [False] * len(scene.classes),
                    },
                },
            )
