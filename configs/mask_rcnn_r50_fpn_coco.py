"""Mask R-CNN R50-FPN on COCO 2017 with torchvision's defaults (`maskrcnn_resnet50_fpn`).

    python train.py --config configs/mask_rcnn_r50_fpn_coco.py --workdir runs/mask_rcnn_coco \
        --config.dataset.manual_dir=~/data/coco \
        --config.init_from=runs/resnet50_imagenet   # converted torchvision ResNet-50 weights
    python eval.py --config configs/mask_rcnn_r50_fpn_coco.py --workdir runs/mask_rcnn_coco

Data: the `jaxseg_coco` builder from a local COCO root (annotations/instances_{train,val}
2017.json and the image folders; see docs/data.md). Images resized so the shorter side is
800 and the longer at most 1333, on a fixed 1344 x 1344 canvas; horizontal flips.
Model: ResNet-50 with frozen BatchNorm, stem and layer1 frozen, FPN 256, anchors 32..512,
RPN 2000/1000 proposals per level before NMS (train/test) and 2000/1000 after, 512 sampled
RoIs (25% positive), RoIAlign 7x7 / 14x14 with `aligned=False` and sampling ratio 2, 100
detections. Schedule "1x": 90k steps at batch 16, SGD momentum 0.9, lr 0.02, weight decay
1e-4, linear warm-up over 1000 steps, lr x0.1 at 60k and 80k.

torchvision reports 37.9 box AP / 34.6 mask AP on val2017 for this recipe (26 epochs,
lr steps at 16 and 22, on 8 GPUs); it has not been reproduced with jaxseg.

detectron2's R50-FPN 1x (38.6 / 35.2) differs in, as overrides:
  --config.model.roi_heads.aligned=True        # RoIAlign with the half-pixel shift
  --config.model.roi_heads.sampling_ratio=-1   # adaptive ceil(roi / bin) samples, under a
                                               # static cap of 4 per axis (exact below it)
  --config.model.rpn.post_nms_top_n_train=1000   # detectron2 keeps 1000 per image in training
  --config.optimizer.warmup_steps=1000 --config.num_train_steps=90000
  --config.optimizer.decay_boundaries="(0.6667, 0.8889)"   # steps 60k and 80k
  and the "BGR, caffe-style" ImageNet weights with pixel means only (no std), which
  jaxseg's torchvision-style weights replace.

Measured: nothing yet (no COCO training has been run with jaxseg).
"""

from jaxseg.config import base_config
from jaxseg.models import MaskRCNN
from jaxseg.models.settings import group_defaults


def get_config():
    config = base_config()
    config.model.name = "mask_rcnn_resnet50_fpn"
    # Every part's settings at MaskRCNN's defaults, which are torchvision's (listed so each
    # can be overridden from the command line, e.g. --config.model.rpn.min_size=0.01).
    config.model.update(group_defaults(MaskRCNN))

    config.dataset.name = "coco"
    config.dataset.config = ""
    config.dataset.train_split = "train"
    config.dataset.eval_split = "validation"
    config.dataset.image_size = 1344
    config.dataset.eval_image_size = 1344
    config.dataset.min_size = 800
    config.dataset.max_size = 1333
    config.dataset.scale_range = (1.0, 1.0)
    config.dataset.flip = True
    config.dataset.max_instances = 100
    config.dataset.mask_size = 112
    config.dataset.worker_count = 8

    config.batch_size = 16
    config.num_train_steps = 90_000
    config.log_every_steps = 100
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 2_000
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.02
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "step"
    config.optimizer.decay_boundaries = (2 / 3, 8 / 9)
    config.optimizer.decay_factor = 0.1
    config.optimizer.warmup_steps = 1000
    config.eval.batch_size = 8
    config.eval.num_pictures = 12
    config.eval.best_metric = "segm_AP"
    return config
