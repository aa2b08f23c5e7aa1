"""RoI heads of Mask R-CNN: RoI sampling, pooling, box head and mask head, losses, detection.

`pool_rois` is the switchable pooler (RoIAlign, aligned or not, or RoIPool) shared by the
box and mask branches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxseg import ops
from jaxseg.detection import losses as det_losses
from jaxseg.detection.postprocess import detect_boxes
from jaxseg.detection.structures import Detections, Instances, Proposals
from jaxseg.detection.targets import mask_targets, sample_rois
from jaxseg.models.box_head import FastRCNNPredictor, TwoMLPHead
from jaxseg.models.mask_head import MaskHead
from jaxseg.models.settings import Group, freeze_groups

POOLERS = ("roi_align", "roi_pool")


def level_scales(features: Sequence[jax.Array], image_size: tuple[int, int]) -> list[float]:
    """Returns the spatial scale 2**round(log2(H_l / H)) of each map, as torchvision infers it."""
    return [2.0 ** round(math.log2(f.shape[1] / image_size[0])) for f in features]


def pool_rois(
    features: Sequence[jax.Array],
    boxes: jax.Array,
    image_size: tuple[int, int],
    output_size: int,
    *,
    pooler: str = "roi_align",
    sampling_ratio: int = 2,
    aligned: bool = False,
    max_sampling_ratio: int = ops.DEFAULT_MAX_SAMPLING_RATIO,
) -> jax.Array:
    """Returns [B, R, output_size, output_size, C]: RoIs pooled from their FPN level.

    Args:
      features: maps [B, H_l, W_l, C] (P2..P5), finest first.
      boxes: [B, R, 4] xyxy, input pixels.
      image_size: (height, width) of the input, for the level scales.
      output_size: 7 for the box head, 14 for the mask head.
      pooler: 'roi_align' (torchvision's `MultiScaleRoIAlign`) or 'roi_pool'.
      sampling_ratio, aligned: RoIAlign's (torchvision: 2, False); `sampling_ratio <= 0`
        samples adaptively (detectron2's pooler with `aligned=True`), up to
        `max_sampling_ratio` per bin and axis (see `ops.roi_align`).
    """
    if pooler not in POOLERS:
        raise ValueError(f"pooler must be one of {POOLERS}, got {pooler!r}")
    scales = level_scales(features, image_size)
    if pooler == "roi_align":

        def one(levels, b):
            return ops.multiscale_roi_align(
                levels,
                b,
                output_size,
                scales=scales,
                sampling_ratio=sampling_ratio,
                aligned=aligned,
                max_sampling_ratio=max_sampling_ratio,
            )
    else:

        def one(levels, b):
            return ops.multiscale_roi_pool(levels, b, output_size, scales=scales)

    return jax.vmap(one)(list(features), jax.lax.stop_gradient(boxes))


class RoIHeads(nn.Module, kw_only=True):
    """Returns (Detections or None, losses): box and mask branches on the proposals.

    Attributes:
      num_classes: K object classes (background excluded); the heads have K + 1 outputs.
      pooler, sampling_ratio, aligned, max_sampling_ratio: see `pool_rois`.
      mask_target_sampling_ratio: RoIAlign samples per bin of the mask targets; -1 is
        torchvision's `project_masks_on_boxes` (adaptive), capped at
        ceil(max(image size) / mask size), so exact for every RoI inside the image.
      box_output_size, mask_output_size: RoI feature sizes (7, 14).
      box_head: settings of `TwoMLPHead` (representation_size: its FC width, 1024).
      mask_head: settings of `MaskHead` (channels: its conv width, 256; num_convs: 4);
        RoIHeads supplies their num_classes and dtype (see `jaxseg.models.settings`).
      fg_iou_threshold: RoI matching (0.5).
      batch_size_per_image, positive_fraction: RoIs sampled per image (512, 0.25).
      mask_rois_per_image: fixed number of mask RoIs per image, the first sampled ones
        (positives come first; 128 = 512 * 0.25 covers every positive).
      box_weights: box coder weights (10, 10, 5, 5).
      smooth_l1_beta: of the box loss.
      score_threshold, nms_threshold, detections_per_image: inference (0.05, 0.5, 100).
      nms: the per-class NMS of the detections ('auto', 'greedy' or 'tiled'; see
        `jaxseg.ops.nms`).
      mask_format: 'crop' or 'canvas', the layout of `Instances.masks`.
      dtype: compute dtype of the heads.

    Training draws the RoI sample from the 'sampling' RNG stream.
    """

    num_classes: int
    pooler: str = "roi_align"
    sampling_ratio: int = 2
    aligned: bool = False
    max_sampling_ratio: int = ops.DEFAULT_MAX_SAMPLING_RATIO
    mask_target_sampling_ratio: int = -1
    box_output_size: int = 7
    mask_output_size: int = 14
    box_head: Mapping[str, Any] = FrozenDict()
    mask_head: Mapping[str, Any] = FrozenDict()
    fg_iou_threshold: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    mask_rois_per_image: int = 128
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0 / 9
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    nms: str = "auto"
    dtype: Any = jnp.float32

    GROUPS: ClassVar[dict[str, Group]] = {
        "box_head": Group(TwoMLPHead),
        "mask_head": Group(MaskHead, derived=("num_classes", "dtype")),
    }

    def __post_init__(self):
        freeze_groups(self)
        super().__post_init__()

    def _pool(self, features, boxes, image_size, size):
        return pool_rois(
            features,
            boxes,
            image_size,
            size,
            pooler=self.pooler,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
            max_sampling_ratio=self.max_sampling_ratio,
        ).astype(self.dtype)

    @nn.compact
    def __call__(
        self,
        features: Sequence[jax.Array],
        proposals: Proposals,
        image_size: tuple[int, int],
        gt: Instances | None = None,
        *,
        train: bool,
    ) -> tuple[Detections | None, dict[str, jax.Array]]:
        """Runs the heads.

        Args:
          features: FPN maps P2..P5 `[B, H_l, W_l, C]` (no P6).
          proposals: `Proposals` [B, P].
          image_size: (height, width) of the input canvas.
          gt: ground truth, needed when `train`.
          train: sample RoIs and return losses (no detections), else detect.

        Returns:
          training: `(None, {'classifier', 'box_reg', 'mask'})`; inference:
          `(Detections, {})` with D = detections_per_image.
        """
        k1 = self.num_classes + 1
        box_head = TwoMLPHead(**self.box_head, dtype=self.dtype, name="box_head")
        predictor = FastRCNNPredictor(num_classes=k1, dtype=self.dtype, name="box_predictor")
        mask_head = MaskHead(**self.mask_head, num_classes=k1, dtype=self.dtype, name="mask_head")
        batch = features[0].shape[0]

        def box_branch(boxes):  # [B, R, 4] -> [B, R, K + 1], [B, R, K + 1, 4]
            pooled = self._pool(features, boxes, image_size, self.box_output_size)
            rois = boxes.shape[1]
            logits, deltas = predictor(box_head(pooled.reshape(batch * rois, *pooled.shape[2:])))
            return logits.reshape(batch, rois, k1), deltas.reshape(batch, rois, k1, 4)

        def mask_branch(boxes, classes):  # -> [B, R, 28, 28] logits of `classes`
            pooled = self._pool(features, boxes, image_size, self.mask_output_size)
            rois = boxes.shape[1]
            flat = pooled.reshape(batch * rois, *pooled.shape[2:])
            logits = mask_head(flat, classes.reshape(batch * rois))  # only `classes`' logits
            return logits.reshape(batch, rois, *logits.shape[1:])

        if not train:
            logits, deltas = box_branch(proposals.boxes)
            boxes, scores, classes, valid = jax.vmap(
                lambda lg, dl, pb, pv: detect_boxes(
                    lg,
                    dl,
                    pb,
                    pv,
                    image_size,
                    score_threshold=self.score_threshold,
                    nms_threshold=self.nms_threshold,
                    detections_per_image=self.detections_per_image,
                    weights=self.box_weights,
                    nms=self.nms,
                )
            )(logits, deltas, proposals.boxes, proposals.valid)
            masks = jax.nn.sigmoid(mask_branch(boxes, classes))
            masks = jnp.where(valid[:, :, None, None], masks, 0.0)
            return Detections(
                boxes=boxes, scores=scores, classes=classes, masks=masks, valid=valid
            ), {}

        if gt is None:
            raise ValueError("RoIHeads: training needs the ground truth `gt`")
        keys = jax.random.split(self.make_rng("sampling"), batch)
        samples = jax.vmap(
            lambda key, pb, pv, gb, gc, gv: sample_rois(
                key,
                pb,
                pv,
                gb,
                gc,
                gv,
                iou_threshold=self.fg_iou_threshold,
                num_samples=self.batch_size_per_image,
                positive_fraction=self.positive_fraction,
                weights=self.box_weights,
            )
        )(keys, proposals.boxes, proposals.valid, gt.boxes, gt.classes, gt.valid)
        logits, deltas = box_branch(samples.boxes)
        losses = det_losses.fast_rcnn_losses(
            logits,
            deltas,
            samples.labels,
            samples.box_targets,
            samples.valid,
            beta=self.smooth_l1_beta,
        )
        num_mask = min(self.mask_rois_per_image, self.batch_size_per_image)
        mask_boxes = samples.boxes[:, :num_mask]
        mask_classes = samples.labels[:, :num_mask]
        mask_valid = samples.valid[:, :num_mask] & (mask_classes > 0)
        mask_logits = mask_branch(mask_boxes, mask_classes)
        targets = jax.vmap(
            lambda m, gb, r, idx: mask_targets(
                m,
                gb,
                r,
                idx,
                mask_format=gt.mask_format,
                output_size=mask_logits.shape[-1],
                sampling_ratio=self.mask_target_sampling_ratio,
                aligned=self.aligned,
                max_sampling_ratio=-(-max(image_size) // mask_logits.shape[-1]),
            )
        )(gt.masks, gt.boxes, mask_boxes, samples.matched[:, :num_mask])
        # Background slots are matched to instance 0, possibly padding: keep them exactly 0
        # so nothing but finite numbers reaches the loss's gradient.
        targets = jnp.where(mask_valid[:, :, None, None], targets, 0.0)
        losses["mask"] = det_losses.mask_loss(mask_logits, targets, mask_valid)
        return None, losses
