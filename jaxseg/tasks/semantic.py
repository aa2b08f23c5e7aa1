"""Semantic segmentation (FCN, FCN-ResNet) as a `Task` of the generic training loop."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import data
from jaxseg.evaluation.segmentation import confusion_matrix, segmentation_metrics
from jaxseg.evaluation.visualize import segmentation_panel
from jaxseg.models import MIN_SIZE, softmax_cross_entropy
from jaxseg.tasks.base import ModelEntry, Task

__all__ = ["SemanticSegmentationTask"]

_PANEL_SIDE = 256  # small images are magnified to about this many pixels in the pictures


class SemanticSegmentationTask(Task):
    """Per-pixel classification into K classes, ignore label 255.

    Batches (from `jaxseg.data.make_semantic_loader`): `image` float32 [B, H, W, 3],
    `label` int32 [B, H, W]; evaluation batches add `valid` bool [B] (False on padding).
    The loss is the per-pixel softmax cross-entropy over valid pixels (`config.loss.reduction`
    'mean' or the reference's 'sum'), plus `config.loss.aux_weight` times the auxiliary
    head's when the model has one. Evaluation sums `[K, K]` confusion matrices; metrics are
    the FCN paper's (`jaxseg.evaluation.segmentation_metrics`).
    """

    metric_names = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")
    default_best_metric = "mean_iou"
    train_keys = ("image", "label")
    eval_keys = ("image", "label", "valid")
    min_image_size = MIN_SIZE

    def __init__(self, config: ml_collections.ConfigDict, entry: ModelEntry):
        super().__init__(config, entry)
        self.info = data.dataset_info(config.dataset.name, "semantic", **self._dataset_kwargs())
        self.num_classes = self.info.num_classes
        self.class_names = tuple(self.info.class_names)
        self.label_names = self.class_names
        self.model = self.build_model(self.num_classes)

    def check(self) -> None:
        self.check_common()
        if self.model.num_classes != self.num_classes:
            raise ValueError(
                f"config.model.num_classes = {self.model.num_classes} but dataset "
                f"{self.config.dataset.name!r} has {self.num_classes} classes "
                f"({', '.join(self.class_names)})"
            )

    def make_loader(self, split, **settings):
        return data.make_semantic_loader(
            self.config.dataset.name, split, **settings, **self._dataset_kwargs()
        )

    def input_spec(self, batch_size):
        size = int(self.config.dataset.image_size)
        return {
            "image": jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32),
            "label": jax.ShapeDtypeStruct((batch_size, size, size), jnp.int32),
        }

    def init_variables(self, rng, batch):
        return dict(self.model.init({"params": rng}, batch["image"], train=False))

    def _logits(self, variables, images, *, train, rng=None, mutable=False):
        """Returns `({'out': [B, H, W, K], maybe 'aux'}, updated collections or None)`."""
        rngs = {"dropout": rng} if rng is not None else None
        if mutable:
            outputs, updates = self.model.apply(
                variables, images, train=train, rngs=rngs, mutable=mutable
            )
        else:
            outputs, updates = self.model.apply(variables, images, train=train, rngs=rngs), None
        if not isinstance(outputs, dict):
            outputs = {"out": outputs}
        return outputs, updates

    def loss_fn(self, params, model_state, batch, rng):
        mutable = list(model_state) if model_state else False
        outputs, updates = self._logits(
            {"params": params, **model_state}, batch["image"], train=True, rng=rng, mutable=mutable
        )
        reduction = self.config.loss.reduction
        main = softmax_cross_entropy(outputs["out"], batch["label"], reduction=reduction)
        metrics = {"loss_main": main}
        loss = main
        if "aux" in outputs:
            aux = softmax_cross_entropy(outputs["aux"], batch["label"], reduction=reduction)
            loss = loss + self.config.loss.aux_weight * aux
            metrics["loss_aux"] = aux
        labelled = batch["label"] != data.IGNORE_LABEL  # [B, H, W]
        correct = (jnp.argmax(outputs["out"], axis=-1) == batch["label"]) & labelled
        metrics["pixel_accuracy"] = jnp.sum(correct) / jnp.maximum(jnp.sum(labelled), 1)
        return loss, (metrics, dict(updates) if updates is not None else model_state)

    def predict(self, variables, batch):
        """Returns int32 [B, H, W] predicted class ids."""
        outputs, _ = self._logits(variables, batch["image"], train=False)
        return jnp.argmax(outputs["out"], axis=-1).astype(jnp.int32)

    def eval_step(self, variables, batch):
        """Returns the int32 [K, K] confusion matrix of the batch's valid images."""
        predictions = self.predict(variables, batch)
        labels = jnp.where(batch["valid"][:, None, None], batch["label"], data.IGNORE_LABEL)
        return confusion_matrix(labels, predictions, num_classes=self.num_classes)

    def eval_metrics(self, totals):
        metrics = segmentation_metrics(np.asarray(totals, np.int64))
        metrics["per_class_iou"] = dict(
            zip(self.class_names, metrics["per_class_iou"], strict=True)
        )
        return metrics

    def write_pictures(self, batch, predictions, directory, *, start):
        paths = []
        os.makedirs(directory, exist_ok=True)
        predictions = np.asarray(predictions)
        for i in np.flatnonzero(np.asarray(batch["valid"])):
            height, width = np.round(
                np.asarray(batch["original_size"][i]) * float(batch["scale"][i])
            ).astype(int)
            image = data.denormalize(np.asarray(batch["image"][i])[:height, :width])
            label = np.asarray(batch["label"][i])[:height, :width]
            prediction = predictions[i, :height, :width]
            panel = segmentation_panel(
                image,
                label,
                prediction,
                self.class_names,
                scale=max(1, _PANEL_SIDE // max(height, width)),
            )
            image_id = int(batch["image_id"][i])
            path = os.path.join(directory, f"{start + len(paths):03d}_image{image_id}.png")
            panel.save(path)
            paths.append(path)
        return paths

    def format_metrics(self, metrics):
        rows = [
            ("pixel accuracy", metrics["pixel_accuracy"]),
            ("mean accuracy", metrics["mean_accuracy"]),
            ("mean IU", metrics["mean_iou"]),
            ("frequency-weighted IU", metrics["fw_iou"]),
        ]
        rows += [(f"IU {name}", iou) for name, iou in metrics["per_class_iou"].items()]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
        lines += [f"{name:<{width}}  {value:6.4f}" for name, value in rows]
        return "\n".join(lines)
