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

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict
from jax.typing import ArrayLike

from jaxseg import ops
from jaxseg.detection.structures import Detections, Instances
from jaxseg.models.fpn import FPN
from jaxseg.models.resnet import ResNet, trainable_mask
from jaxseg.models.roi_heads import RoIHeads
from jaxseg.models.rpn import RPN
from jaxseg.models.settings import Group, freeze_groups, refuse_renamed
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


# The flat attributes MaskRCNN took before its settings were grouped by part.
RENAMED_SETTINGS: dict[str, str] = {
    "fpn_channels": "fpn.channels",
    "anchor_sizes": "rpn.anchor_sizes",
    "aspect_ratios": "rpn.aspect_ratios",
    **{
        f"rpn_{key}": f"rpn.{key}"
        for key in (
            "pre_nms_top_n_train",
            "pre_nms_top_n_test",
            "post_nms_top_n_train",
            "post_nms_top_n_test",
            "nms_threshold",
            "fg_iou_threshold",
            "bg_iou_threshold",
            "batch_size_per_image",
            "positive_fraction",
        )
    },
    "pooler": "roi_heads.pooler",
    "sampling_ratio": "roi_heads.sampling_ratio",
    "aligned": "roi_heads.aligned",
    "representation_size": "roi_heads.box_head.representation_size",
    "mask_channels": "roi_heads.mask_head.channels",
    "box_batch_size_per_image": "roi_heads.batch_size_per_image",
    "box_positive_fraction": "roi_heads.positive_fraction",
    "box_fg_iou_threshold": "roi_heads.fg_iou_threshold",
    "box_score_threshold": "roi_heads.score_threshold",
    "box_nms_threshold": "roi_heads.nms_threshold",
    "mask_rois_per_image": "roi_heads.mask_rois_per_image",
    "detections_per_image": "roi_heads.detections_per_image",
}


@refuse_renamed
class MaskRCNN(nn.Module, kw_only=True):
    """Mask R-CNN; see the module docstring. Defaults are torchvision's `maskrcnn_resnet50_fpn`.

    The settings of each part are a group of that part's own attributes, mirroring the
    module tree (see `jaxseg.models.settings`); what a group leaves out keeps the part's
    default (torchvision's), and the parent supplies num_classes, nms and dtype::

        MaskRCNN(num_classes=K, rpn={'pre_nms_top_n_test': 500},
                 roi_heads={'detections_per_image': 50, 'mask_head': {'channels': 128}})

    Attributes:
      num_classes: K object classes (background excluded).
      depth, width: ResNet depth (18, 34, 50, 101) and channel multiplier.
      backbone_norm: 'frozen' (torchvision), 'batch' or 'group'.
      frozen_stages: backbone stages without gradient (2: stem and layer1).
      fpn: settings of `FPN` (channels, extra_max_pool).
      rpn: settings of `RPN` (anchor_sizes, aspect_ratios, pre/post-NMS counts for training
        and test, nms_threshold, min_size, score_threshold, matching thresholds, sampled
        anchors per image and their positive fraction, smooth_l1_beta).
      roi_heads: settings of `RoIHeads` (pooler, sampling ratios, output sizes, sampled RoIs,
        matching IoU, mask RoIs, box coder weights, smooth_l1_beta, inference thresholds,
        detections_per_image), with the groups `box_head` (`TwoMLPHead`) and `mask_head`
        (`MaskHead`).
      nms: the NMS algorithm of the RPN's proposals and of the detections' per-class NMS,
        'auto' (tiled where the program is lowered for GPU/TPU; on CPU greedy or tiled,
        whichever is faster for the counts), 'greedy' or 'tiled'; all keep the same boxes
        (see `jaxseg.ops.nms`).
      mask_format: 'crop' or 'canvas', the layout of the ground-truth masks.
      dtype: compute dtype (float32 or bfloat16); parameters, box decoding and losses stay
        float32.
    """

    GROUPS: ClassVar[dict[str, Group]] = {
        "fpn": Group(FPN),
        "rpn": Group(RPN, derived=("nms", "dtype")),
        "roi_heads": Group(RoIHeads, derived=("num_classes", "nms", "dtype")),
    }
    RENAMED: ClassVar[dict[str, str]] = RENAMED_SETTINGS

    num_classes: int
    depth: int = 50
    width: float = 1.0
    backbone_norm: str = "frozen"
    frozen_stages: int = 2
    fpn: Mapping[str, Any] = FrozenDict()
    rpn: Mapping[str, Any] = FrozenDict()
    roi_heads: Mapping[str, Any] = FrozenDict()
    nms: str = "auto"
    mask_format: str = "crop"
    dtype: Any = jnp.float32

    def __post_init__(self):
        freeze_groups(self)
        super().__post_init__()

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
        features = FPN(**self.fpn, dtype=self.dtype, name="fpn")(
            [c["c2"], c["c3"], c["c4"], c["c5"]]
        )
        proposals, rpn_losses = RPN(**self.rpn, nms=self.nms, dtype=self.dtype, name="rpn")(
            features, image_size, gt, train=train
        )
        detections, roi_losses = RoIHeads(
            **self.roi_heads,
            num_classes=self.num_classes,
            nms=self.nms,
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
