"""The instance segmentation input pipeline: `make_instance_loader`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import grain
import numpy as np
from absl import logging

from jaxseg.data import catalog, loader, transforms
from jaxseg.data.instance_masks import AxisAffine, crop_masks, warp_masks

MASK_FORMATS = ("crop", "canvas")


@dataclasses.dataclass(frozen=True)
class InstanceTransform(grain.transforms.RandomMap):
    """Resize, (train: scale jitter, crop, flip), pad to the canvas, pad ground truth.

    Resize: the image is scaled by s = min(H_c / H, W_c / W), so it fits the canvas; with
    `min_size` set, s is also at most min(min_size / short side, max_size / long side)
    (torchvision's rule). In training s is multiplied by a factor drawn from
    `scale_range`; where the result exceeds the canvas a random canvas-sized window is
    kept. Then a left-right flip with probability 1/2 (if `flip`), and padding at the
    bottom / right. Crowd instances are dropped if `drop_crowd`; instances whose box has
    no area on the canvas are dropped. Images with more than `max_instances` instances
    keep the `max_instances` largest (by canvas box area), and a warning is logged.

    See `make_instance_loader` for the output.
    """

    size: tuple[int, int]
    max_instances: int
    train: bool
    mask_format: str = "crop"
    mask_size: int = 112
    min_size: int | None = None
    max_size: int | None = None
    scale_range: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
    drop_crowd: bool = True

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image, masks = element["image"], element["masks"]
        boxes, classes = element["boxes"], element["classes"]
        image_id = int(element["image_id"])
        height, width = image.shape[:2]
        keep = ~element["is_crowd"] if self.drop_crowd else np.ones(len(classes), bool)

        scale = min(self.size[0] / height, self.size[1] / width)
        if self.min_size is not None:
            short, long = min(height, width), max(height, width)
            scale = min(scale, self.min_size / short, (self.max_size or np.inf) / long)
        if self.train:
            scale *= rng.uniform(*self.scale_range)
        resized = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = transforms.resize_image(image, resized)
        affine = AxisAffine(resized[1] / width, 0.0, resized[0] / height, 0.0)
        if resized[0] > self.size[0] or resized[1] > self.size[1]:
            y0, x0 = transforms.random_crop_origin(rng, resized, self.size)
            image = image[y0 : y0 + self.size[0], x0 : x0 + self.size[1]]
            affine = dataclasses.replace(affine, bx=affine.bx - x0, by=affine.by - y0)
        if self.train and self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            affine = dataclasses.replace(affine, ax=-affine.ax, bx=image.shape[1] - affine.bx)

        canvas_boxes = transforms.clip_boxes(affine.boxes(boxes), image.shape[:2])
        keep &= (canvas_boxes[:, 2] > canvas_boxes[:, 0]) & (
            canvas_boxes[:, 3] > canvas_boxes[:, 1]
        )
        index = np.flatnonzero(keep)
        if len(index) > self.max_instances:
            logging.log_every_n(
                logging.WARNING,
                "image %d has %d instances, more than max_instances=%d: keeping the largest",
                100,
                image_id,
                len(index),
                self.max_instances,
            )
            areas = transforms.area(canvas_boxes[index])
            index = np.sort(index[np.argsort(-areas, kind="stable")[: self.max_instances]])
        num = len(index)

        if self.mask_format == "crop":
            kept_masks = crop_masks(masks[index], canvas_boxes[index], affine, self.mask_size)
            mask_shape = (self.mask_size, self.mask_size)
        else:
            kept_masks = warp_masks(masks[index], affine, self.size)
            mask_shape = self.size
        out_masks = np.zeros((self.max_instances, *mask_shape), np.uint8)
        out_masks[:num] = kept_masks
        out_boxes = np.zeros((self.max_instances, 4), np.float32)
        out_boxes[:num] = canvas_boxes[index]
        out_classes = np.zeros((self.max_instances,), np.int32)
        out_classes[:num] = classes[index]
        return {
            "image": transforms.normalize_and_pad(image, self.size),
            "boxes": out_boxes,
            "classes": out_classes,
            "masks": out_masks,
            "valid": np.arange(self.max_instances) < num,
            "image_id": np.int64(image_id),
            "original_size": np.array([height, width], np.int32),
            "scale": np.float32(scale),
            "image_valid": np.bool_(element["image_valid"]),
        }


def make_instance_loader(
    name: str,
    split: str,
    *,
    batch_size: int,
    image_size: int | Sequence[int],
    max_instances: int,
    train: bool,
    seed: int,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
    data_dir: str | os.PathLike | None = None,
    mask_format: str = "crop",
    mask_size: int = 112,
    min_size: int | None = None,
    max_size: int | None = None,
    scale_range: tuple[float, float] = (1.0, 1.0),
    flip: bool = True,
    drop_crowd: bool = True,
    read_options: grain.ReadOptions | None = None,
    **dataset_kwargs,
) -> grain.DataLoader:
    """Returns a grain DataLoader of instance segmentation batches of `split` of `name`.

    Iterate it (`iter(loader)`); the iterator's `get_state()` / `set_state(state)` save
    and restore the exact position.

    Each element is a dict (H, W = canvas `image_size`, N = `max_instances`):
      image: float32 [B, H, W, 3], normalised with the ImageNet mean and std; the resized
        image sits at the top-left, the padding is 0.
      boxes: float32 [B, N, 4] xyxy in canvas pixels (0 where not valid).
      classes: int32 [B, N], 1..K; 0 where not valid.
      masks: uint8 [B, N, M, M] 0/1 with mask_format="crop" (default): each instance's
        mask cut to its box and resampled to M x M (M = `mask_size`), like RoIAlign of
        the mask on its own box; or uint8 [B, N, H, W] 0/1 on the whole canvas with
        mask_format="canvas" (for small canvases and visualisation).
      valid: bool [B, N], True for real instances (they come first).
      image_id: int64 [B] (-1 on evaluation batch padding).
      original_size: int32 [B, 2], (H, W) of the stored image.
      scale: float32 [B], canvas pixels per original pixel: a canvas box / scale is a
        box of the original image (to within half a pixel of rounding).
      image_valid: bool [B], False on the copies that pad the last evaluation batch.

    Instances beyond `max_instances` (largest kept) are dropped with a logged warning;
    crowd instances are dropped when `drop_crowd`; images without instances are kept
    (all `valid` False).

    Args:
      name: "jaxseg_shapes", "coco" (a `jaxseg_coco` config), "lvis",
        "coco/2017_panoptic" (see `jaxseg.data.catalog`).
      split: TFDS split, e.g. "train", "validation", "train[:1%]".
      batch_size: examples per batch on this process.
      image_size: canvas (H, W) or side, e.g. (800, 1333) or 1024.
      max_instances: N, ground truth slots per image.
      train: augmentation, shuffling each epoch, dropped remainder if True.
      seed: seed of the shuffling and augmentation.
      num_epochs, shard_index, shard_count, worker_count, data_dir: as for
        `make_semantic_loader`.
      mask_format, mask_size: see `masks` above.
      min_size, max_size: torchvision-style resize (e.g. 800, 1333); None = fit canvas.
      scale_range: training scale jitter factors (1, 1 = none; e.g. (0.1, 2.0) for large
        scale jitter, cropped to the canvas).
      flip: random left-right flips in training.
      drop_crowd: leave out `is_crowd` instances (as torchvision / detectron2 training do).
      read_options: grain read threads and prefetch.
      **dataset_kwargs: `config` and `manual_dir` for "coco".
    """
    size = transforms.canvas_size(image_size)
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1, got {max_instances}")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    if mask_size < 1:
        raise ValueError(f"mask_size must be >= 1, got {mask_size}")
    if (min_size is None) != (max_size is None):
        raise ValueError(f"give both min_size and max_size or neither, got {min_size}, {max_size}")
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    catalog.require_task(name, catalog.INSTANCE)
    entry, builder = catalog.load_builder(name, data_dir=data_dir, **dataset_kwargs)
    records = builder.as_data_source(split=split)
    transform = InstanceTransform(
        size=size,
        max_instances=max_instances,
        train=train,
        mask_format=mask_format,
        mask_size=mask_size,
        min_size=min_size,
        max_size=max_size,
        scale_range=tuple(scale_range),
        flip=flip,
        drop_crowd=drop_crowd,
    )
    return loader.make_data_loader(
        records,
        entry.adapters[catalog.INSTANCE],
        [transform],
        batch_size=batch_size,
        train=train,
        seed=seed,
        num_epochs=num_epochs,
        shard_index=shard_index,
        shard_count=shard_count,
        worker_count=worker_count,
        read_options=read_options,
    )
