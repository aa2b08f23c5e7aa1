"""Instance segmentation (Mask R-CNN) as a `Task` of the generic training loop."""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import data, ops
from jaxseg.data import catalog
from jaxseg.detection import LOSS_NAMES, Instances, total_loss
from jaxseg.evaluation.coco import (
    IOU_TYPES,
    METRIC_NAMES,
    coco_evaluate,
    coco_ground_truth,
    detections_to_coco,
    paste_masks_original,
)
from jaxseg.evaluation.instance_pictures import instance_panel
from jaxseg.models import mask_rcnn_trainable_mask
from jaxseg.tasks.base import ModelEntry, Task

__all__ = ["InstanceSegmentationTask"]

_PANEL_SIDE = 320  # small images are magnified to about this many pixels in the pictures
_PICTURE_SCORE = 0.3  # detections drawn in the pictures (score at least)
_MIN_SIZE = 32  # the FPN's coarsest level (stride 32 before P6) needs this many pixels


def fpn_scales_fit(size: int) -> bool:
    """Returns whether P2..P5 of a `size` px canvas get distinct scales (as the pooler infers).

    Each stride-2 stage rounds up, so level l (stride 2**l) has ceil(size / 2**l) cells, and
    the pooler infers its scale as 2**round(log2(cells / size)), like torchvision's.
    """
    sizes = [-(-size // 2**level) for level in range(2, 6)]
    scales = [round(math.log2(cells / size)) for cells in sizes]
    return scales == [-2, -3, -4, -5]


class InstanceSegmentationTask(Task):
    """Detection and instance masks of K object classes (class 0 is background).

    Batches (from `jaxseg.data.make_instance_loader`, masks cut to their boxes):
    `image` float32 [B, H, W, 3], `boxes` [B, N, 4], `classes` [B, N], `masks` uint8
    [B, N, M, M], `valid` [B, N]; evaluation batches add `image_id`, `scale`,
    `original_size` and `image_valid`. The loss is torchvision's unweighted sum of the
    five Mask R-CNN losses, each also logged (`loss_rpn_objectness`, `loss_rpn_box`,
    `loss_classifier`, `loss_box_reg`, `loss_mask`). Evaluation keeps every detection and
    computes COCO box and mask AP with pycocotools against the evaluation split's ground
    truth at the original resolution (`jaxseg.evaluation.coco`).
    """

    metric_names = tuple(f"{kind}_{name}" for kind in IOU_TYPES for name in METRIC_NAMES)
    default_best_metric = "segm_AP"
    train_keys = ("image", "boxes", "classes", "masks", "valid")
    eval_keys = ("image", "image_id", "scale", "original_size", "image_valid")
    min_image_size = _MIN_SIZE

    def __init__(self, config: ml_collections.ConfigDict, entry: ModelEntry):
        super().__init__(config, entry)
        self.info = data.dataset_info(config.dataset.name, "instance", **self._dataset_kwargs())
        classes = self.info.instance
        self.num_classes = classes.num_classes
        self.class_names = tuple(classes.class_names)
        self.label_names = ("background", *self.class_names)
        self.category_ids = classes.category_ids
        self.model = self.build_model(self.num_classes)
        self._ground_truth: dict[str, Any] | None = None

    def _loader_kwargs(self) -> dict[str, Any]:
        dataset = self.config.dataset
        kwargs = {
            "max_instances": int(dataset.max_instances),
            "mask_size": int(dataset.mask_size),
            **self._dataset_kwargs(),
        }
        if dataset.min_size:
            kwargs["min_size"], kwargs["max_size"] = int(dataset.min_size), int(dataset.max_size)
        return kwargs

    def check(self) -> None:
        self.check_common()
        if self.model.num_classes != self.num_classes:
            raise ValueError(
                f"config.model.num_classes = {self.model.num_classes} but dataset "
                f"{self.config.dataset.name!r} has {self.num_classes} object classes "
                f"({', '.join(self.class_names)})"
            )
        if self.model.mask_format != "crop":
            raise ValueError(
                "the instance loader gives masks cut to their boxes: mask_format 'crop'"
            )
        max_instances = int(self.config.dataset.max_instances)
        if max_instances < 1:
            raise ValueError(f"config.dataset.max_instances must be >= 1, got {max_instances}")
        if bool(self.config.dataset.min_size) != bool(self.config.dataset.max_size):
            raise ValueError("give both config.dataset.min_size and max_size, or neither")

    def image_size_problem(self, size: int) -> str | None:
        if fpn_scales_fit(size):
            return None
        below = next(s for s in range(size - 1, 0, -1) if fpn_scales_fit(s))
        above = next(s for s in range(size + 1, 2 * size + 64) if fpn_scales_fit(s))
        return (
            f"the FPN levels of a {size} px canvas do not have distinct strides "
            f"(sizes 4, 8, 16, 32 px per cell); the nearest sizes that work are {below} and "
            f"{above} (every multiple of 32 does)"
        )

    def make_loader(self, split, **settings):
        return data.make_instance_loader(
            self.config.dataset.name, split, **settings, **self._loader_kwargs()
        )

    def input_spec(self, batch_size):
        size = int(self.config.dataset.image_size)
        n, m = int(self.config.dataset.max_instances), int(self.config.dataset.mask_size)
        return {
            "image": jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32),
            "boxes": jax.ShapeDtypeStruct((batch_size, n, 4), jnp.float32),
            "classes": jax.ShapeDtypeStruct((batch_size, n), jnp.int32),
            "masks": jax.ShapeDtypeStruct((batch_size, n, m, m), jnp.uint8),
            "valid": jax.ShapeDtypeStruct((batch_size, n), jnp.bool_),
        }

    def init_variables(self, rng, batch):
        return dict(self.model.init({"params": rng}, batch["image"], train=False))

    def loss_fn(self, params, model_state, batch, rng):
        gt = Instances.from_batch(batch, mask_format=self.model.mask_format)
        mutable = ["batch_stats"] if self.model.backbone_norm == "batch" else False
        variables = {"params": params, **model_state}
        rngs = {"sampling": rng}
        if mutable:
            (_, losses), updates = self.model.apply(
                variables, batch["image"], gt, train=True, rngs=rngs, mutable=mutable
            )
            model_state = {**model_state, **updates}
        else:
            _, losses = self.model.apply(variables, batch["image"], gt, train=True, rngs=rngs)
        metrics = {f"loss_{name}": losses[name] for name in LOSS_NAMES}
        return total_loss(losses), (metrics, model_state)

    def trainable(self, params):
        """Returns bools like `params`: False on the backbone's frozen stages and norms."""
        return mask_rcnn_trainable_mask(
            params,
            backbone_norm=self.model.backbone_norm,
            frozen_stages=self.model.frozen_stages,
        )

    def predict(self, variables, batch):
        """Returns the batch's `Detections` (boxes in canvas pixels, 28 x 28 mask probabilities)."""
        return self.model.apply(variables, batch["image"], train=False)

    def eval_step(self, variables, batch):
        """Returns the batch's detections and image ids, sizes and scales (kept, not summed)."""
        detections = self.predict(variables, batch)
        return {
            "boxes": detections.boxes,
            "scores": detections.scores,
            "classes": detections.classes,
            "masks": detections.masks,
            "valid": detections.valid & batch["image_valid"][:, None],
            "image_id": batch["image_id"],
            "scale": batch["scale"],
            "original_size": batch["original_size"],
            "image_valid": batch["image_valid"],
        }

    def reduce_eval(self, outputs):
        """Returns the COCO results (list of dicts) of every valid image's detections."""
        results = []
        for out in outputs:
            for i in np.flatnonzero(out["image_valid"]):
                keep = np.flatnonzero(out["valid"][i])
                boxes = out["boxes"][i, keep] / float(out["scale"][i])  # original pixels
                masks = paste_masks_original(
                    out["masks"][i, keep], boxes, tuple(out["original_size"][i])
                )
                results += detections_to_coco(
                    int(out["image_id"][i]),
                    boxes,
                    out["scores"][i, keep],
                    out["classes"][i, keep],
                    masks,
                    category_ids=self.category_ids,
                )
        return results

    def ground_truth(self) -> dict[str, Any]:
        """Returns (and caches) the evaluation split's ground truth as a COCO dataset dict."""
        if self._ground_truth is None:
            dataset = self.config.dataset
            entry, builder = catalog.load_builder(dataset.name, **self._dataset_kwargs())
            source = builder.as_data_source(split=dataset.eval_split)
            adapter = entry.adapters[catalog.INSTANCE]
            records = (adapter(i, source[i]) for i in range(len(source)))
            self._ground_truth = coco_ground_truth(
                records,
                num_classes=self.num_classes,
                category_ids=self.category_ids,
                class_names=self.class_names,
            )
        return self._ground_truth

    def eval_metrics(self, totals):
        return coco_evaluate(self.ground_truth(), totals)

    def write_pictures(self, batch, predictions, directory, *, start):
        paths = []
        os.makedirs(directory, exist_ok=True)
        canvas = tuple(np.shape(batch["image"])[1:3])
        for i in np.flatnonzero(np.asarray(batch["image_valid"])):
            height, width = np.round(
                np.asarray(batch["original_size"][i]) * float(batch["scale"][i])
            ).astype(int)
            image = data.denormalize(np.asarray(batch["image"][i])[:height, :width])
            gt_valid = np.asarray(batch["valid"][i])
            gt_boxes = np.asarray(batch["boxes"][i])[gt_valid]
            # paste_masks_in_image fills x2 - x1 + 1 pixels (torchvision's inclusive
            # corner); a ground-truth box's x2, y2 are pixel edges, so one less.
            gt_masks = np.asarray(
                ops.paste_masks_in_image(
                    np.asarray(batch["masks"][i])[gt_valid].astype(np.float32),
                    gt_boxes - np.array([0, 0, 1, 1], np.float32),
                    canvas,
                    padding=0,
                )
                >= 0.5
            )[:, :height, :width]
            keep = np.asarray(predictions.valid[i]) & (
                np.asarray(predictions.scores[i]) >= _PICTURE_SCORE
            )
            boxes = np.asarray(predictions.boxes[i])[keep]
            masks = paste_masks_original(np.asarray(predictions.masks[i])[keep], boxes, canvas)
            panel = instance_panel(
                image,
                (gt_boxes, np.asarray(batch["classes"][i])[gt_valid], gt_masks),
                (
                    boxes,
                    np.asarray(predictions.classes[i])[keep],
                    np.asarray(predictions.scores[i])[keep],
                    masks[:, :height, :width],
                ),
                self.class_names,
                scale=max(1, _PANEL_SIDE // max(height, width)),
            )
            image_id = int(batch["image_id"][i])
            path = os.path.join(directory, f"{start + len(paths):03d}_image{image_id}.png")
            panel.save(path)
            paths.append(path)
        return paths

    def format_metrics(self, metrics):
        lines = [f"{'':<5}" + "".join(f"{name:>8}" for name in METRIC_NAMES)]
        for iou_type in IOU_TYPES:
            values = [metrics.get(f"{iou_type}_{name}", float("nan")) for name in METRIC_NAMES]
            cells = "".join(f"{v:8.4f}" if np.isfinite(v) else f"{'n/a':>8}" for v in values)
            lines.append(f"{iou_type:<5}{cells}")
        return "\n".join(lines)
