"""Mask R-CNN, ResNet-18-FPN at quarter width, on jaxseg_shapes/instance (64 px), for a CPU.

    python train.py --config configs/mask_rcnn_shapes.py --workdir runs/mask_rcnn_shapes
    python eval.py --config configs/mask_rcnn_shapes.py --workdir runs/mask_rcnn_shapes

Trained from scratch (BatchNorm in the backbone, nothing frozen), torchvision's Mask R-CNN
scaled down to 64 px images: anchors 8..128 px, 100 proposals (50 at test), 32 sampled RoIs
and 8 mask RoIs per image, FPN of 64 channels, heads of 128 / 32 channels, 30 detections.
RoIAlign pooler (torchvision's `aligned=False`, sampling ratio 2). Adam 2e-3, batch 8, 4800
steps, step decay (x0.1) at 2/3 and 8/9 of the schedule, evaluation every 1600 steps.

Measured (docs/mask_rcnn.md, "Results"; 2 CPU cores): train.py 18.4 min including compile
and three evaluations; validation split (200 images), pycocotools: box AP 0.625 / AP50 0.908 /
AP75 0.730, mask AP 0.545 / AP50 0.879 / AP75 0.578 (seed 0).
With --config.seed=1: box AP 0.643, mask AP 0.540.
"""

from jaxseg.config import base_config
from jaxseg.models import MaskRCNN
from jaxseg.models.settings import group_defaults


def get_config():
    config = base_config()
    config.model.name = "mask_rcnn_resnet18_fpn"
    config.model.width = 0.25
    config.model.backbone_norm = "batch"
    config.model.frozen_stages = 0
    # Every part's settings, torchvision's defaults first (so each can be overridden from
    # the command line, e.g. --config.model.rpn.min_size=0.01), then this config's.
    config.model.update(group_defaults(MaskRCNN))
    config.model.fpn.channels = 64
    rpn = config.model.rpn
    rpn.anchor_sizes = ((8,), (16,), (32,), (64,), (128,))
    rpn.pre_nms_top_n_train = 100
    rpn.pre_nms_top_n_test = 50
    rpn.post_nms_top_n_train = 100
    rpn.post_nms_top_n_test = 50
    rpn.batch_size_per_image = 128
    roi_heads = config.model.roi_heads
    roi_heads.pooler = "roi_align"
    roi_heads.batch_size_per_image = 32
    roi_heads.mask_rois_per_image = 8
    roi_heads.detections_per_image = 30
    roi_heads.box_head.representation_size = 128
    roi_heads.mask_head.channels = 32

    config.dataset.name = "jaxseg_shapes"
    config.dataset.config = "instance"
    config.dataset.image_size = 64
    config.dataset.eval_image_size = 64
    config.dataset.scale_range = (1.0, 1.0)
    config.dataset.max_instances = 4
    config.dataset.mask_size = 56

    config.batch_size = 8
    config.num_train_steps = 4800
    config.log_every_steps = 50
    config.eval_every_steps = 1600
    config.checkpoint_every_steps = 1600
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "step"
    config.optimizer.warmup_steps = 50
    config.optimizer.grad_clip_norm = 10.0
    config.eval.batch_size = 50
    config.eval.num_pictures = 6
    config.eval.best_metric = "segm_AP"
    return config
