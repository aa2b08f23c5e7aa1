"""Mask R-CNN (He et al. 2017) with a ResNet-FPN backbone, torchvision's defaults.

A chain backbone -> FPN -> RPN -> RoI heads; each part returns (outputs, losses). The whole
forward pass, training included, has static shapes (fixed proposal, RoI, mask-RoI and
detection counts with `valid` masks), so one `jax.jit` compiles it once::

    model = MaskRCNN(num_classes=K)
    variables = model.init({'params': key}, images, train=False)
    _, losses = model.apply(variables, images, gt, train=True, rngs={'sampling': key})
    loss = total_loss(losses)
    detections = model.apply(variables, images, train=False)        # Detections [B, D]
    masks = paste_detection_masks(detections, (H, W), threshold=0.5)  # [B, D, H, W]

Variables: 'params' and 'batch_stats' (the frozen BatchNorm statistics live there).
Parameter names: `backbone/...` (see `ResNet`), `fpn/...` (see `FPN`), `rpn/head/...`,
`roi_heads/{box_head, box_predictor, mask_head}/...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg import ops
from jaxseg.detection.structures import Detections, Instances
from jaxseg.models.fpn import FPN
from jaxseg.models.resnet import ResNet, trainable_mask
from jaxseg.models.roi_heads import RoIHeads
from jaxseg.models.rpn import RPN
from jaxseg.ops.nms import check_nms_method


def sanitize_instances(gt: Instances, image_size: tuple[int, int]) -> Instances:
    """Returns `gt` with boxes clipped to the input and degenerate instances made invalid.

    An instance stays valid if its class is in 1..K and its clipped box has positive width
    and height (a box thinner than a pixel stays; one of zero area, or wholly outside the
    input, has no IoU with anything and would give log(0) box targets).
    """
    boxes = ops.clip_boxes(gt.boxes.astype(jnp.float32), image_size)
    positive = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    valid = gt.valid & positive & (gt.classes > 0)
    return gt.replace(
        boxes=jnp.where(valid[..., None], boxes, 0.0),
        classes=jnp.where(valid, gt.classes, 0).astype(jnp.int32),
        valid=valid,
    )


class MaskRCNN(nn.Module, kw_only=True):
    """Mask R-CNN; see the module docstring. Defaults are torchvision's `maskrcnn_resnet50_fpn`.

    Attributes:
      num_classes: K object classes (background excluded).
      depth, width: ResNet depth (18, 34, 50, 101) and channel multiplier.
      backbone_norm: 'frozen' (torchvision), 'batch' or 'group'.
      frozen_stages: backbone stages without gradient (2: stem and layer1).
      fpn_channels: 256.
      anchor_sizes, aspect_ratios: per level sizes (P2..P6) and shared ratios.
      rpn_*: see `RPN` (pre/post-NMS counts for training and test, NMS threshold,
        matching thresholds, sampled anchors per image and their positive fraction).
      nms: the NMS algorithm of the RPN's proposals and of the detections' per-class NMS,
        'auto' (tiled where the program is lowered for GPU/TPU; on CPU greedy or tiled,
        whichever is faster for the counts), 'greedy' or 'tiled'; all keep the same boxes
        (see `jaxseg.ops.nms`).
      pooler, sampling_ratio, aligned: the RoI pooler (see `pool_rois`).
      representation_size, mask_channels: box-head FC width, mask-head conv width.
      box_*: see `RoIHeads` (sampled RoIs per image, positive fraction, matching IoU,
        inference score / NMS thresholds).
      mask_rois_per_image: fixed mask RoIs per image in training.
      detections_per_image: D.
      mask_format: 'crop' or 'canvas', the layout of the ground-truth masks.
      dtype: compute dtype (float32 or bfloat16); parameters, box decoding and losses stay
        float32.
    """

    num_classes: int
    depth: int = 50
    width: float = 1.0
    backbone_norm: str = "frozen"
    frozen_stages: int = 2
    fpn_channels: int = 256
    anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_threshold: float = 0.7
    rpn_fg_iou_threshold: float = 0.7
    rpn_bg_iou_threshold: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    nms: str = "auto"
    pooler: str = "roi_align"
    sampling_ratio: int = 2
    aligned: bool = False
    representation_size: int = 1024
    mask_channels: int = 256
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_fg_iou_threshold: float = 0.5
    box_score_threshold: float = 0.05
    box_nms_threshold: float = 0.5
    mask_rois_per_image: int = 128
    detections_per_image: int = 100
    mask_format: str = "crop"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, images: ArrayLike, gt: Instances | None = None, *, train: bool
    ) -> Detections | tuple[None, dict[str, jax.Array]]:
        """Runs Mask R-CNN.

        Args:
          images: [B, H, W, 3] normalised images on a fixed canvas.
          gt: padded ground truth (`Instances`), needed when `train`; the 'sampling' RNG
            stream must be given (`rngs={'sampling': key}`).
          train: return losses instead of detections.

        Returns:
          training: `(None, losses)` with scalar float32 `rpn_objectness`, `rpn_box`,
          `classifier`, `box_reg`, `mask` (sum them with `total_loss`);
          inference: `Detections` with boxes [B, D, 4], scores, classes, masks
          [B, D, 28, 28] (probabilities of the predicted class inside each box; paste them
          with `paste_detection_masks`), valid [B, D].
        """
        images = jnp.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"MaskRCNN: images must be [B, H, W, 3], got {images.shape}")
        if self.num_classes < 1:
            raise ValueError(f"MaskRCNN: num_classes must be >= 1, got {self.num_classes}")
        check_nms_method(self.nms, "MaskRCNN: nms")
        image_size = tuple(images.shape[1:3])
        if train:
            if gt is None:
                raise ValueError("MaskRCNN: training needs the ground truth `gt`")
            if gt.mask_format != self.mask_format:
                raise ValueError(
                    f"MaskRCNN: gt.mask_format {gt.mask_format!r} differs from the model's "
                    f"{self.mask_format!r}"
                )
            gt.check(images.shape[0])
            gt = sanitize_instances(gt, image_size)

        c = ResNet(
            depth=self.depth,
            width=self.width,
            norm=self.backbone_norm,
            frozen_stages=self.frozen_stages,
            dtype=self.dtype,
            name="backbone",
        )(images, train=train)
        features = FPN(channels=self.fpn_channels, dtype=self.dtype, name="fpn")(
            [c["c2"], c["c3"], c["c4"], c["c5"]]
        )
        proposals, rpn_losses = RPN(
            anchor_sizes=self.anchor_sizes,
            aspect_ratios=self.aspect_ratios,
            pre_nms_top_n_train=self.rpn_pre_nms_top_n_train,
            pre_nms_top_n_test=self.rpn_pre_nms_top_n_test,
            post_nms_top_n_train=self.rpn_post_nms_top_n_train,
            post_nms_top_n_test=self.rpn_post_nms_top_n_test,
            nms_threshold=self.rpn_nms_threshold,
            fg_iou_threshold=self.rpn_fg_iou_threshold,
            bg_iou_threshold=self.rpn_bg_iou_threshold,
            batch_size_per_image=self.rpn_batch_size_per_image,
            positive_fraction=self.rpn_positive_fraction,
            nms=self.nms,
            dtype=self.dtype,
            name="rpn",
        )(features, image_size, gt, train=train)
        detections, roi_losses = RoIHeads(
            num_classes=self.num_classes,
            pooler=self.pooler,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
            representation_size=self.representation_size,
            mask_channels=self.mask_channels,
            fg_iou_threshold=self.box_fg_iou_threshold,
            batch_size_per_image=self.box_batch_size_per_image,
            positive_fraction=self.box_positive_fraction,
            mask_rois_per_image=self.mask_rois_per_image,
            score_threshold=self.box_score_threshold,
            nms_threshold=self.box_nms_threshold,
            nms=self.nms,
            detections_per_image=self.detections_per_image,
            dtype=self.dtype,
            name="roi_heads",
        )(features[:4], proposals, image_size, gt, train=train)
        if train:
            return None, {**rpn_losses, **roi_losses}
        return detections


def mask_rcnn_trainable_mask(
    params: Any, *, backbone_norm: str = "frozen", frozen_stages: int = 2
) -> Any:
    """Returns a pytree of bools like a `MaskRCNN`'s params: False where frozen.

    For `optax.masked` (weight decay): the backbone follows `resnet.trainable_mask`; FPN,
    RPN and RoI heads are trainable.
    """
    mask = jax.tree_util.tree_map(lambda _: True, params)
    mask = dict(mask)
    mask["backbone"] = trainable_mask(
        params["backbone"], norm=backbone_norm, frozen_stages=frozen_stages
    )
    return mask
