"""The semantic segmentation input pipeline: `make_semantic_loader`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import grain
import numpy as np

from jaxseg import IGNORE_LABEL
from jaxseg.data import catalog, loader, transforms


@dataclasses.dataclass(frozen=True)
class SemanticTrainTransform(grain.transforms.RandomMap):
    """Random scale, crop and flip, identical on image and label; pad; normalise.

    The image is rescaled by a factor drawn uniformly from `scale_range` (bilinear; the
    label by nearest neighbour), padded to at least the crop size (image with the mean
    colour, label with 255), cropped at a random position to `size` and flipped left-right
    with probability 1/2.

    Output: image float32 [H, W, 3] normalised; label int32 [H, W], 255 = ignore.
    """

    size: tuple[int, int]
    scale_range: tuple[float, float]
    flip: bool

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image, label = element["image"], element["label"]
        scale = rng.uniform(*self.scale_range)
        height, width = label.shape
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = transforms.resize_image(image, scaled)
        label = transforms.resize_label(label, scaled)
        padded = (max(scaled[0], self.size[0]), max(scaled[1], self.size[1]))
        image = transforms.pad_image(image, padded)
        label = transforms.pad_to(label, padded, IGNORE_LABEL)
        y0, x0 = transforms.random_crop_origin(rng, padded, self.size)
        image = image[y0 : y0 + self.size[0], x0 : x0 + self.size[1]]
        label = label[y0 : y0 + self.size[0], x0 : x0 + self.size[1]]
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return {
            "image": transforms.normalize(image),
            "label": label.astype(np.int32),
        }


@dataclasses.dataclass(frozen=True)
class SemanticEvalTransform(grain.transforms.Map):
    """Fits the image into `size` (downscaling only, aspect kept), pads, normalises.

    Images that fit the canvas keep their full resolution, so metrics on the canvas are
    metrics at full resolution; larger ones are scaled by `scale` = min(H_c/H, W_c/W).

    Output: image float32 [H_c, W_c, 3]; label int32 [H_c, W_c] (255 on the padding);
    valid bool (False for batch padding); image_id int64 (-1 for batch padding);
    original_size int32 [2] (H, W); scale float32.
    """

    size: tuple[int, int]

    def map(self, element: dict) -> dict:
        image, label = element["image"], element["label"]
        height, width = label.shape
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"image {element['image_id']}: image {image.shape[:2]} and label "
                f"{label.shape} sizes differ"
            )
        scale = min(1.0, self.size[0] / height, self.size[1] / width)
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = transforms.resize_image(image, scaled)
        label = transforms.pad_to(transforms.resize_label(label, scaled), self.size, IGNORE_LABEL)
        return {
            "image": transforms.normalize_and_pad(image, self.size),
            "label": label.astype(np.int32),
            "valid": np.bool_(element["image_valid"]),
            "image_id": np.int64(element["image_id"]),
            "original_size": np.array([height, width], np.int32),
            "scale": np.float32(scale),
        }


def make_semantic_loader(
    name: str,
    split: str,
    *,
    batch_size: int,
    image_size: int | Sequence[int],
    train: bool,
    seed: int,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
    data_dir: str | os.PathLike | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    read_options: grain.ReadOptions | None = None,
    **dataset_kwargs,
) -> grain.DataLoader:
    """Returns a grain DataLoader of semantic segmentation batches of `split` of `name`.

    Iterate it (`iter(loader)`); the iterator's `get_state()` / `set_state(state)` save
    and restore the exact position (the state is small bytes, for the checkpoint).

    Each element is a dict:
      image: float32 [B, H, W, 3], normalised with the ImageNet mean and std.
      label: int32 [B, H, W], class ids 0..K-1, 255 = ignore (padding included).
    and with `train=False` also:
      valid: bool [B], False on the copies that pad the last batch.
      image_id: int64 [B] (-1 on padding).
      original_size: int32 [B, 2], (H, W) of the stored image.
      scale: float32 [B], resize factor (canvas pixels per original pixel; 1 when the
        image fits the canvas, so predictions crop back with [:H, :W]).

    Args:
      name: dataset name, e.g. "jaxseg_shapes", "jaxseg_shapes/medium", "voc2012",
        "voc2012/sbd", "oxford_iiit_pet", "cityscapes" (see `jaxseg.data.catalog`).
      split: TFDS split, e.g. "train", "validation", "val", "train[:10%]".
      batch_size: examples per batch on this process (global batch / process count).
      image_size: canvas (H, W) or side: the training crop and the evaluation canvas.
      train: random augmentation, per-epoch shuffling and dropped remainder if True;
        in-order, padded and one epoch (unless `num_epochs`) if False.
      seed: seed of the shuffling and the augmentation; same seed, same stream.
      num_epochs: None repeats forever (training default).
      shard_index, shard_count: this process's shard, e.g. `jax.process_index()` and
        `jax.process_count()`.
      worker_count: grain worker processes (0 = in this process).
      data_dir: TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
      scale_range: training rescale factors (uniform), relative to the stored image.
      flip: random left-right flips in training.
      read_options: grain read threads and prefetch, if the defaults do not suit.
      **dataset_kwargs: `config` (name or BuilderConfig) and `manual_dir` (VOCdevkit for
        "voc2012").
    """
    size = transforms.canvas_size(image_size)
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    catalog.require_task(name, catalog.SEMANTIC)
    entry, builder = catalog.load_builder(name, data_dir=data_dir, **dataset_kwargs)
    records = builder.as_data_source(split=split)
    if train:
        operations = [SemanticTrainTransform(size, tuple(scale_range), flip)]
    else:
        operations = [SemanticEvalTransform(size)]
    return loader.make_data_loader(
        records,
        entry.adapters[catalog.SEMANTIC],
        operations,
        batch_size=batch_size,
        train=train,
        seed=seed,
        num_epochs=num_epochs,
        shard_index=shard_index,
        shard_count=shard_count,
        worker_count=worker_count,
        read_options=read_options,
    )
