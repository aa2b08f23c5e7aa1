"""FCN-8s (VGG16) on PASCAL VOC 2012 with the paper's settings (a GPU/TPU run).

Staged as in the paper: FCN-32s from ImageNet VGG16, then `configs/fcn16s` style
`init_from`; this config is the last stage, FCN-8s from an FCN-16s workdir:

    python train.py --config configs/fcn8s_voc.py --workdir runs/fcn8s_voc \
        --config.dataset.manual_dir=/path/to/VOCdevkit --config.init_from=runs/fcn16s_voc
    python eval.py --config configs/fcn8s_voc.py --workdir runs/fcn8s_voc \
        --config.dataset.manual_dir=/path/to/VOCdevkit

The reference: batch 1 of whole images, the summed loss, SGD momentum 0.99, learning
rate 1e-14 (1e-10 / 1e-12 for 32s / 16s), weight decay 5e-4, 100k iterations on SBD train
(8,498 images); 62.7 mean IU on VOC 2011 val (65.5 on seg11valid for the released model).
Here images are cropped to 500x500 (padded with the ignore label) so that batches have
one shape, and evaluation runs on a 512x512 canvas, which holds every VOC image at full
resolution. Not run in this repository (no VOC data or GPU here): no result to quote yet.
"""

from jaxseg.config import base_config


def get_config():
    config = base_config()
    config.model.name = "fcn8s"
    config.model.width = 1.0
    config.model.dropout_rate = 0.5
    config.dataset.name = "voc2012"
    config.dataset.config = "sbd"
    config.dataset.train_split = "train"
    config.dataset.eval_split = "seg11valid"
    config.dataset.image_size = 500
    config.dataset.eval_image_size = 512
    config.dataset.scale_range = (1.0, 1.0)
    config.dataset.flip = True
    config.dataset.worker_count = 4
    config.batch_size = 1
    config.num_train_steps = 100_000
    config.log_every_steps = 100
    config.eval_every_steps = 4_000
    config.checkpoint_every_steps = 4_000
    config.loss.reduction = "sum"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 1e-14
    config.optimizer.momentum = 0.99
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "constant"
    config.eval.batch_size = 8
    return config
