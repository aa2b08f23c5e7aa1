"""FCN-ResNet50 (torchvision's `fcn_resnet50`) on PASCAL VOC 2012 (a GPU/TPU run).

    python train.py --config configs/fcn_resnet50_voc.py --workdir runs/fcn_resnet50_voc \
        --config.dataset.manual_dir=/path/to/VOCdevkit
    python eval.py --config configs/fcn_resnet50_voc.py --workdir runs/fcn_resnet50_voc \
        --config.dataset.manual_dir=/path/to/VOCdevkit

torchvision's reference recipe: 520 px random-resize crops (scale 0.5-2.0), flips,
SGD momentum 0.9, learning rate 0.02 for batch 16 with poly decay (power 0.9), weight
decay 1e-4, auxiliary loss 0.5, 30 epochs; torchvision reports 60.5 mean IU on COCO
val2017 restricted to the VOC classes (weights start from an ImageNet ResNet-50, see the
interop converter). Not run in this repository (no VOC data or GPU here): no result yet.
"""

from jaxseg.config import base_config


def get_config():
    config = base_config()
    config.model.name = "fcn_resnet50"
    config.model.aux_loss = True
    config.model.norm = "batch"
    config.dataset.name = "voc2012"
    config.dataset.config = "sbd"
    config.dataset.image_size = 520
    config.dataset.eval_split = "val"
    config.dataset.eval_image_size = 512
    config.dataset.scale_range = (0.5, 2.0)
    config.dataset.worker_count = 4
    config.batch_size = 16
    config.num_train_steps = 30 * 8_498 // 16
    config.log_every_steps = 50
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 2_000
    config.loss.aux_weight = 0.5
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.02
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "poly"
    config.optimizer.poly_power = 0.9
    config.eval.batch_size = 8
    return config
