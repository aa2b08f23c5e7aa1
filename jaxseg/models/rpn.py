"""Region Proposal Network: a shared conv head over the FPN levels, anchors, proposals, losses.

Layer names map onto torchvision's `rpn.head`: `conv` <- `conv.0.0`, `cls_logits`,
`bbox_pred` (kernels `weight.permute(2, 3, 1, 0)`; channel order a * 4 + coordinate is
kept, so anchors line up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops
from jaxseg.detection import losses as det_losses
from jaxseg.detection.postprocess import select_proposals
from jaxseg.detection.sampler import sample_balanced
from jaxseg.detection.structures import Instances, Proposals
from jaxseg.detection.targets import rpn_targets
from jaxseg.models.pointwise_conv import PointwiseConv
from jaxseg.ops.nms import check_nms_method

_INIT = nn.initializers.normal(stddev=0.01)  # torchvision's RPNHead


class RPNHead(nn.Module, kw_only=True):
    """Returns per level (objectness [B, H, W, A], deltas [B, H, W, A * 4]).

    Attributes:
      num_anchors: A, anchors per location.
      dtype: compute dtype.
    """

    num_anchors: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
        """Applies the same 3x3 conv + ReLU and two 1x1 convs to every level [B, H, W, C]."""
        channels = features[0].shape[-1]
        conv = nn.Conv(
            channels, (3, 3), padding=1, kernel_init=_INIT, dtype=self.dtype, name="conv"
        )
        cls_logits = PointwiseConv(
            features=self.num_anchors, kernel_init=_INIT, dtype=self.dtype, name="cls_logits"
        )
        bbox_pred = PointwiseConv(
            features=4 * self.num_anchors, kernel_init=_INIT, dtype=self.dtype, name="bbox_pred"
        )
        outputs = []
        for x in features:
            t = nn.relu(conv(x))
            outputs.append((cls_logits(t), bbox_pred(t)))
        return outputs


class RPN(nn.Module, kw_only=True):
    """Returns (Proposals, losses) from the FPN levels; torchvision's defaults.

    Attributes:
      anchor_sizes: anchor sizes per level (one level per FPN map given).
      aspect_ratios: height / width ratios, shared by all levels.
      pre_nms_top_n_train, pre_nms_top_n_test: candidates per level before NMS.
      post_nms_top_n_train, post_nms_top_n_test: P, proposals per image (fixed).
      nms_threshold, min_size, score_threshold: proposal filtering.
      nms: the proposal NMS algorithm, 'auto' (tiled on GPU/TPU; on CPU whichever is
        faster for the counts), 'greedy' or 'tiled' (see `jaxseg.ops.nms`); all keep the
        same proposals.
      fg_iou_threshold, bg_iou_threshold: anchor matching (low-quality matches allowed).
      batch_size_per_image, positive_fraction: anchors sampled per image for the loss.
      smooth_l1_beta: of the box loss.
      dtype: compute dtype of the head.

    Training draws the anchor sample from the 'sampling' RNG stream.
    """

    anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    pre_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_train: int = 2000
    post_nms_top_n_test: int = 1000
    nms_threshold: float = 0.7
    min_size: float = 1e-3
    score_threshold: float = 0.0
    nms: str = "auto"
    fg_iou_threshold: float = 0.7
    bg_iou_threshold: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    smooth_l1_beta: float = 1.0 / 9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        features: Sequence[jax.Array],
        image_size: tuple[int, int],
        gt: Instances | None = None,
        *,
        train: bool,
    ) -> tuple[Proposals, dict[str, jax.Array]]:
        """Runs the RPN.

        Args:
          features: FPN maps `[B, H_l, W_l, C]`, finest first (P2..P6).
          image_size: (height, width) of the input canvas.
          gt: ground truth (needed when `train`); its boxes should have positive areas.
          train: compute losses and use the training proposal counts.

        Returns:
          `Proposals` with P = post_nms_top_n_{train,test} per image, and
          `{'rpn_objectness', 'rpn_box'}` in training (`{}` otherwise).
        """
        if len(self.anchor_sizes) != len(features):
            raise ValueError(
                f"RPN: need anchor sizes for each of the {len(features)} levels, got "
                f"{len(self.anchor_sizes)}"
            )
        check_nms_method(self.nms, "RPN: nms")
        num_anchors = len(self.anchor_sizes[0]) * len(self.aspect_ratios)
        head = RPNHead(num_anchors=num_anchors, dtype=self.dtype, name="head")
        outputs = head(features)
        batch = features[0].shape[0]
        # [B, H, W, A] -> [B, H * W * A]: position-major, as the anchors are ordered.
        objectness = jnp.concatenate([o.reshape(batch, -1) for o, _ in outputs], axis=1).astype(
            jnp.float32
        )
        deltas = jnp.concatenate([d.reshape(batch, -1, 4) for _, d in outputs], axis=1).astype(
            jnp.float32
        )
        anchors_per_level = ops.generate_anchors(
            [f.shape[1:3] for f in features],
            image_size,
            sizes=self.anchor_sizes,
            aspect_ratios=(tuple(self.aspect_ratios),),
        )
        level_sizes = [a.shape[0] for a in anchors_per_level]
        anchors = jnp.asarray(np.concatenate(anchors_per_level))  # [A_total, 4]

        pre, post = (
            (self.pre_nms_top_n_train, self.post_nms_top_n_train)
            if train
            else (self.pre_nms_top_n_test, self.post_nms_top_n_test)
        )
        boxes, scores, valid = jax.vmap(
            lambda o, d: select_proposals(
                o,
                d,
                anchors,
                level_sizes,
                image_size,
                pre_nms_top_n=pre,
                post_nms_top_n=post,
                nms_threshold=self.nms_threshold,
                min_size=self.min_size,
                score_threshold=self.score_threshold,
                nms=self.nms,
            )
        )(objectness, deltas)
        proposals = Proposals(boxes=boxes, scores=scores, valid=valid)
        if not train:
            return proposals, {}
        if gt is None:
            raise ValueError("RPN: training needs the ground truth `gt`")

        def per_image(key, o, d, gt_boxes, gt_valid):
            labels, targets = rpn_targets(
                anchors,
                gt_boxes,
                gt_valid,
                fg_iou_threshold=self.fg_iou_threshold,
                bg_iou_threshold=self.bg_iou_threshold,
            )
            index, sampled, _ = sample_balanced(
                key,
                labels,
                num_samples=self.batch_size_per_image,
                positive_fraction=self.positive_fraction,
            )
            return o[index], d[index], labels[index], targets[index], sampled

        keys = jax.random.split(self.make_rng("sampling"), batch)
        o, d, labels, targets, sampled = jax.vmap(per_image)(
            keys, objectness, deltas, gt.boxes, gt.valid
        )
        losses = det_losses.rpn_losses(o, d, labels, targets, sampled, beta=self.smooth_l1_beta)
        return proposals, losses
