"""`jaxseg_coco`: any COCO-format instance dataset (annotation JSON + image folder).

COCO 2017 is the config "2017", built from a local copy laid out as COCO distributes it:

    <manual_dir>/annotations/instances_train2017.json   <manual_dir>/train2017/*.jpg
    <manual_dir>/annotations/instances_val2017.json     <manual_dir>/val2017/*.jpg

    make_instance_loader("coco", "train", manual_dir="/data/coco", ...)

Another dataset: `custom_config` names its build after its content, so two datasets never
share a build and an edited JSON gets a fresh one (the old build stays until deleted):

    config = custom_config({"train": "/data/my/train.json", "validation": "/data/my/val.json"},
                           images="/data/my/images")
    make_instance_loader("coco", "train", config=config, ...)

(a training config says the same with `config.dataset.annotations` and
`config.dataset.images`). A `CocoFormatConfig(name=..., splits={split: (json, folder)})`
of your own works too; its build is checked against its source like the "2017" build's.

Paths may be absolute or relative to `manual_dir`. Every build records its source (paths,
SHA-256 of each JSON, a fingerprint of each image folder: `jaxseg.data.sources`) in
`info.metadata["source"]`; `catalog.load_builder` refuses a prepared build whose source
differs from the one asked for. Category ids are mapped to classes
1..K in increasing id order; `info.metadata` keeps `instance_class_names`,
`category_ids` (class k is category `category_ids[k - 1]`, for COCO evaluation) and
`skipped`, the count of what was left out per split and reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import ClassVar

import tensorflow_datasets as tfds
from absl import logging

from jaxseg.data import coco_annotations, features, sources
from jaxseg.data.image_io import BadImageError, encode_png, load_rgb_for_tfds
from jaxseg.data.skips import SkipCounter
from jaxseg.data.tfds_compat import Builder


@dataclasses.dataclass
class CocoFormatConfig(tfds.core.BuilderConfig):
    """A COCO-format dataset: split name -> (annotation JSON, image folder)."""

    splits: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


def _absolute(path: str, manual_dir: str | os.PathLike | None) -> str | None:
    """Returns `path` made absolute against `manual_dir`; None if relative without one."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isabs(path):
        return path
    if not manual_dir:
        return None
    return os.path.join(os.path.abspath(os.path.expanduser(os.fspath(manual_dir))), path)


def splits_source(
    splits: Mapping[str, tuple[str, str]], manual_dir: str | os.PathLike | None
) -> dict | None:
    """Returns the source of COCO-format `splits` (see `jaxseg.data.sources`).

    None when a path is relative and no `manual_dir` says relative to what (an existing
    build is then used as it is). Raises FileNotFoundError naming a missing file or folder.
    """
    paths, fingerprints = {}, {}
    for split, (annotation_file, image_dir) in sorted(splits.items()):
        annotation_file = _absolute(annotation_file, manual_dir)
        image_dir = _absolute(image_dir, manual_dir)
        if annotation_file is None or image_dir is None:
            return None
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"missing COCO annotation file: {annotation_file}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"missing image folder for split {split}: {image_dir}")
        paths[f"{split} annotations"] = annotation_file
        paths[f"{split} images"] = image_dir
        fingerprints[f"{split} annotations"] = sources.file_fingerprint(annotation_file)
        fingerprints[f"{split} images"] = sources.folder_fingerprint(image_dir)
    return {"paths": paths, "fingerprints": fingerprints}


def custom_config(
    annotations: Mapping[str, str],
    images: str | Mapping[str, str],
    *,
    manual_dir: str | os.PathLike | None = None,
) -> CocoFormatConfig:
    """Returns the config of a COCO-format dataset, named after its content.

    The name is "custom_" and 12 hex digits of a hash of the source's fingerprints (each
    JSON's SHA-256, each image folder's file list): different data get different builds in
    the data dir, the same data moved elsewhere reuses its build, and an edited JSON or a
    changed image folder is built afresh (the previous build is kept, never deleted).

    Args:
      annotations: split name -> COCO annotation JSON; empty values are no split.
      images: the image folder of every split, or split name -> folder.
      manual_dir: what relative paths are relative to (default: the working directory).

    Raises:
      ValueError: no split, or a split without an image folder.
      FileNotFoundError: naming a missing JSON or image folder.
    """
    base = manual_dir or os.getcwd()
    annotations = {split: path for split, path in dict(annotations).items() if path}
    if not annotations:
        raise ValueError("no annotation file given: annotations maps no split to a JSON file")
    if isinstance(images, str):
        if not images:
            raise ValueError(f"no image folder given for the annotations {annotations}: set images")
        folders = dict.fromkeys(annotations, images)
    else:
        folders = {split: path for split, path in dict(images).items() if path}
        missing = sorted(annotations.keys() - folders.keys())
        if missing:
            raise ValueError(
                f"no image folder for split(s) {missing}: images maps only {sorted(folders)}"
            )
    splits = {
        split: (_absolute(path, base), _absolute(folders[split], base))
        for split, path in annotations.items()
    }
    source = splits_source(splits, None)
    digest = hashlib.sha256(json.dumps(source["fingerprints"], sort_keys=True).encode()).hexdigest()
    return CocoFormatConfig(
        name=f"custom_{digest[:12]}",
        description=f"COCO-format data from {sources.format_source(source)}",
        splits=splits,
    )


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

    def source(self, manual_dir: str | os.PathLike | None) -> dict | None:
        """Returns the source this config reads with `manual_dir` (see `splits_source`)."""
        return splits_source(self.builder_config.splits, manual_dir)

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
        self.info.metadata["source"] = splits_source(
            {split: (a, i) for split, (a, i, _) in resolved.items()}, None
        )
        self._box_repairs = {"count": 0, "example": None}
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
                by_image.get(image["id"], []),
                height,
                width,
                categories,
                path,
                skips,
                box_repairs=self._box_repairs,
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

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config)
        # One warning per build, not one per annotation: a tool that writes such boxes
        # writes thousands.
        repairs = self._box_repairs
        if repairs["count"]:
            logging.warning(
                "%s: %d annotation(s) had a box of zero or negative width or height but a "
                "valid mask; their boxes were taken from their masks (e.g. %s). Counted in "
                "info.metadata['skipped'] as '%s'.",
                self.builder_config.name,
                repairs["count"],
                repairs["example"],
                f"repaired: {coco_annotations.BOX_FROM_MASK}",
            )
