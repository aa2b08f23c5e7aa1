"""`jaxseg_coco`: any COCO-format instance dataset (annotation JSON + image folder).

COCO 2017 is the config "2017", built from a local copy laid out as COCO distributes it:

    <manual_dir>/annotations/instances_train2017.json   <manual_dir>/train2017/*.jpg
    <manual_dir>/annotations/instances_val2017.json     <manual_dir>/val2017/*.jpg

    make_instance_loader("coco", "train", manual_dir="/data/coco", ...)

Another dataset gets its own config:

    config = CocoFormatConfig(name="mydata", splits={
        "train": ("/data/my/train.json", "/data/my/images"),
        "validation": ("/data/my/val.json", "/data/my/images")})
    make_instance_loader("coco", "train", config=config, ...)

Paths may be absolute or relative to `manual_dir`. Category ids are mapped to classes
1..K in increasing id order; `info.metadata` keeps `instance_class_names`,
`category_ids` (class k is category `category_ids[k - 1]`, for COCO evaluation) and
`skipped`, the count of what was left out per split and reason.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import tensorflow_datasets as tfds

from jaxseg.data import coco_annotations, features
from jaxseg.data.image_io import BadImageError, encode_png, load_rgb_for_tfds
from jaxseg.data.skips import SkipCounter
from jaxseg.data.tfds_compat import Builder


@dataclasses.dataclass
class CocoFormatConfig(tfds.core.BuilderConfig):
    """A COCO-format dataset: split name -> (annotation JSON, image folder)."""

    splits: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


class JaxsegCoco(Builder):
    """COCO-format instance segmentation (boxes, classes, masks, crowd flags)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the COCO annotation JSON files and image folders in manual_dir (see the "
        "jaxseg.data.coco_builder docstring), or use a CocoFormatConfig with absolute paths."
    )
    BUILDER_CONFIGS: ClassVar[list] = [
        CocoFormatConfig(
            name="2017",
            description="COCO 2017 instances, 80 classes.",
            splits={
                "train": ("annotations/instances_train2017.json", "train2017"),
                "validation": ("annotations/instances_val2017.json", "val2017"),
            },
        )
    ]
    DEFAULT_CONFIG_NAME = "2017"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features.instance_features()),
            metadata=tfds.core.MetadataDict(),
        )

    def _resolve(self, dl_manager, path: str) -> str:
        if os.path.isabs(path):
            return path
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError as e:  # TFDS asserts when no manual_dir was configured.
            raise FileNotFoundError(f"{path} is relative but no manual_dir was given ({e})") from e
        return os.path.join(os.fspath(manual_dir), path)

    def _split_generators(self, dl_manager):
        config = self.builder_config
        if not config.splits:
            raise ValueError(f"config {config.name!r} names no splits")
        # Everything is read and checked before any example is written, so a bad path
        # stops the build early instead of halfway.
        resolved = {}
        for split, (annotation_file, image_dir) in config.splits.items():
            annotation_file = self._resolve(dl_manager, annotation_file)
            image_dir = self._resolve(dl_manager, image_dir)
            if not os.path.isdir(image_dir):
                raise FileNotFoundError(f"missing image folder for split {split}: {image_dir}")
            resolved[split] = (
                annotation_file,
                image_dir,
                coco_annotations.load_json(annotation_file),
            )
        first_file, _, first = next(iter(resolved.values()))
        categories = coco_annotations.CategoryMap(first["categories"])
        for annotation_file, _, data in resolved.values():
            other = coco_annotations.CategoryMap(data["categories"])
            if other.category_ids != categories.category_ids:
                raise ValueError(
                    f"{annotation_file} has categories {other.category_ids}, but "
                    f"{first_file} has {categories.category_ids}; all splits must agree"
                )
        self.info.metadata["instance_class_names"] = list(categories.names)
        self.info.metadata["category_ids"] = list(categories.category_ids)
        self.info.metadata["skipped"] = {}
        return {
            split: self._generate_examples(split, annotation_file, image_dir, data, categories)
            for split, (annotation_file, image_dir, data) in resolved.items()
        }

    def _generate_examples(self, split, annotation_file, image_dir, data, categories):
        skips = SkipCounter(split)
        by_image = coco_annotations.annotations_by_image(data)
        known_images = {image.get("id") for image in data["images"]}
        for image_id in by_image.keys() - known_images:
            skips.skip("annotations of an image id not in 'images'", f"image id {image_id}")
        written = 0
        for image in data["images"]:
            path = os.path.join(image_dir, image["file_name"])
            try:
                encoded, (height, width) = load_rgb_for_tfds(path)
            except FileNotFoundError:
                skips.skip("missing image file", path)
                continue
            except BadImageError as e:
                skips.skip("corrupt or unreadable image", f"{path}: {e}")
                continue
            if (image.get("height"), image.get("width")) not in ((height, width), (None, None)):
                skips.skip(
                    f"image is {height}x{width} but annotated as "
                    f"{image.get('height')}x{image.get('width')}",
                    path,
                )
                continue
            instances = coco_annotations.image_instances(
                by_image.get(image["id"], []), height, width, categories, path, skips
            )
            written += 1
            yield (
                int(image["id"]),
                {
                    "image": encoded,
                    "image_id": int(image["id"]),
                    "file_name": image["file_name"],
                    "objects": {
                        "box": instances["box"],
                        "label": instances["label"],
                        "mask": [encode_png(m) for m in instances["mask"]],
                        "is_crowd": instances["is_crowd"],
                    },
                },
            )
        if written == 0:
            raise ValueError(
                f"split {split}: none of the {len(data['images'])} images of "
                f"{annotation_file} could be read from {image_dir}"
            )
        self.info.metadata["skipped"][split] = skips.as_dict()
