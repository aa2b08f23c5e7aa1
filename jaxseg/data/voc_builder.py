"""`jaxseg_voc2012`: PASCAL VOC 2012 semantic segmentation from a local VOCdevkit.

    <manual_dir>/VOCdevkit/VOC2012/JPEGImages/*.jpg
    <manual_dir>/VOCdevkit/VOC2012/SegmentationClass/*.png     (palette PNGs)
    <manual_dir>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

Config "default": the official splits, train (1,464) and val (1,449).

Config "sbd" adds the Semantic Boundaries Dataset (Hariharan et al.), as the FCN paper
trains with it:

    <manual_dir>/benchmark_RELEASE/dataset/{cls/*.mat, img/*.jpg, train.txt, val.txt}

and has the splits train (SBD train, 8,498: the FCN paper's training set), trainval (SBD
train + val, 11,355; it overlaps VOC val), val (VOC 2012 val) and, when its list can be
found, seg11valid (the FCN paper's 736 validation images: VOC 2011 segmentation val
minus SBD train), from `<manual_dir>/seg11valid.txt` or from
`<manual_dir>/VOCdevkit/VOC2011/ImageSets/Segmentation/val.txt`.

The build records its source (`jaxseg.data.sources`): the split lists' SHA-256 and the
image and label folders' file lists; a build made from another VOCdevkit is refused.

Labels are class ids 0..20 with 255 (the object borders VOC marks "void") ignored; SBD
labels have no border. Pixels with any other value are set to 255 and counted.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jaxseg.data import adapters, features, sources
from jaxseg.data.image_io import (
    BadImageError,
    decode_label_png,
    encode_png,
    load_rgb_for_tfds,
    read_file,
)
from jaxseg.data.skips import SkipCounter
from jaxseg.data.tfds_compat import Builder

_NUM_CLASSES = len(adapters.VOC_CLASS_NAMES)


@dataclasses.dataclass
class VocConfig(tfds.core.BuilderConfig):
    """use_sbd: also build the SBD splits (see the module docstring)."""

    use_sbd: bool = False


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing image list: {path}")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def _image_id(name: str) -> int:
    """Returns an int id for a VOC image name: 2007_000032 -> 2007000032 (else a CRC32)."""
    digits = name.replace("_", "")
    return int(digits) if digits.isdigit() else zlib.crc32(name.encode())


def _load_sbd_label(path: str) -> np.ndarray:
    """Returns uint8 [H, W] class ids from an SBD `cls/*.mat` file."""
    from scipy import io as scipy_io  # scipy comes with jax

    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file: {path}")
    try:
        gt = scipy_io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
    except Exception as e:  # scipy raises several types for damaged files
        raise BadImageError(f"cannot read SBD label {path}: {e}") from e
    return np.asarray(gt.Segmentation, dtype=np.uint8)


class JaxsegVoc2012(Builder):
    """PASCAL VOC 2012 segmentation (21 classes, 255 = ignore), optionally with SBD."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract VOCtrainval_11-May-2012.tar into manual_dir (giving manual_dir/VOCdevkit); "
        "for the 'sbd' config also extract benchmark.tgz (giving manual_dir/benchmark_RELEASE)."
    )
    BUILDER_CONFIGS: ClassVar[list] = [
        VocConfig(name="default", description="Official VOC 2012 train / val."),
        VocConfig(
            name="sbd", description="SBD train / trainval, VOC val, seg11valid.", use_sbd=True
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features.semantic_features()),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        voc = os.path.join(root, "VOCdevkit", "VOC2012")
        if not os.path.isdir(voc):
            raise FileNotFoundError(f"missing VOCdevkit: {voc} does not exist")
        lists = os.path.join(voc, "ImageSets", "Segmentation")

        def voc_items(ids):
            return [
                (i, os.path.join(voc, "JPEGImages", f"{i}.jpg"),
                 os.path.join(voc, "SegmentationClass", f"{i}.png"))
                for i in ids
            ]  # fmt: skip

        val_ids = _read_ids(os.path.join(lists, "val.txt"))
        splits = {"val": voc_items(val_ids)}
        if not self.builder_config.use_sbd:
            splits["train"] = voc_items(_read_ids(os.path.join(lists, "train.txt")))
        else:
            sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
            if not os.path.isdir(sbd):
                raise FileNotFoundError(f"missing SBD: {sbd} does not exist")
            sbd_train = _read_ids(os.path.join(sbd, "train.txt"))
            sbd_val = _read_ids(os.path.join(sbd, "val.txt"))

            def sbd_items(ids):
                return [
                    (i, os.path.join(sbd, "img", f"{i}.jpg"), os.path.join(sbd, "cls", f"{i}.mat"))
                    for i in ids
                ]

            splits["train"] = sbd_items(sbd_train)
            splits["trainval"] = sbd_items(sbd_train + sbd_val)
            seg11 = self._seg11valid_ids(root, set(sbd_train))
            if seg11 is not None:
                splits["seg11valid"] = voc_items(seg11)
        self.info.metadata["skipped"] = {}
        self.info.metadata["source"] = self.source(root)
        return {name: self._generate_examples(name, items) for name, items in splits.items()}

    def source(self, manual_dir: str | os.PathLike | None) -> dict | None:
        """Returns the source this config reads from `manual_dir` (`jaxseg.data.sources`).

        The split lists (content hashes) and the image and label folders (file names and
        sizes) that the build reads; None without `manual_dir`. FileNotFoundError names a
        missing folder or list.
        """
        if not manual_dir:
            return None
        root = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
        voc = os.path.join(root, "VOCdevkit", "VOC2012")
        lists = os.path.join(voc, "ImageSets", "Segmentation")
        files = {"val list": os.path.join(lists, "val.txt")}
        folders = {
            "VOC images": os.path.join(voc, "JPEGImages"),
            "VOC labels": os.path.join(voc, "SegmentationClass"),
        }
        if not self.builder_config.use_sbd:
            files["train list"] = os.path.join(lists, "train.txt")
        else:
            sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
            files["SBD train list"] = os.path.join(sbd, "train.txt")
            files["SBD val list"] = os.path.join(sbd, "val.txt")
            folders["SBD images"] = os.path.join(sbd, "img")
            folders["SBD labels"] = os.path.join(sbd, "cls")
            for seg11 in (
                os.path.join(root, "seg11valid.txt"),
                os.path.join(root, "VOCdevkit", "VOC2011", "ImageSets", "Segmentation", "val.txt"),
            ):
                if os.path.isfile(seg11):
                    files["seg11valid list"] = seg11
                    break
        fingerprints = {k: sources.file_fingerprint(v) for k, v in files.items()}
        fingerprints.update({k: sources.folder_fingerprint(v) for k, v in folders.items()})
        return {"paths": {**files, **folders}, "fingerprints": fingerprints}

    def _seg11valid_ids(self, root: str, sbd_train: set[str]) -> list[str] | None:
        listed = os.path.join(root, "seg11valid.txt")
        if os.path.isfile(listed):
            return _read_ids(listed)
        voc2011_val = os.path.join(
            root, "VOCdevkit", "VOC2011", "ImageSets", "Segmentation", "val.txt"
        )
        if os.path.isfile(voc2011_val):
            return [i for i in _read_ids(voc2011_val) if i not in sbd_train]
        logging.warning("no seg11valid split: neither %s nor %s exists", listed, voc2011_val)
        return None

    def _generate_examples(self, split: str, items):
        skips = SkipCounter(split)
        written = 0
        for image_id, image_path, label_path in items:
            try:
                encoded, size = load_rgb_for_tfds(image_path)
                if label_path.endswith(".mat"):
                    label = _load_sbd_label(label_path)
                else:
                    label = decode_label_png(read_file(label_path), name=label_path)
            except FileNotFoundError as e:
                skips.skip("missing file", str(e))
                continue
            except (BadImageError, ValueError) as e:
                skips.skip("unreadable image or label", str(e))
                continue
            if label.shape != size:
                skips.skip(
                    f"label size {label.shape} differs from image size {size}",
                    f"{label_path} vs {image_path}",
                )
                continue
            unknown = (label >= _NUM_CLASSES) & (label != adapters.IGNORE)
            if unknown.any():
                skips.repair("label values outside 0..20 and 255 set to 255", label_path)
                label = np.where(unknown, adapters.IGNORE, label).astype(np.uint8)
            written += 1
            yield (
                image_id,
                {
                    "image": encoded,
                    "label": encode_png(label),
                    "image_id": _image_id(image_id),
                    "file_name": image_id,
                },
            )
        if written == 0:
            raise ValueError(f"split {split}: none of its {len(items)} images could be read")
        self.info.metadata["skipped"][split] = skips.as_dict()
