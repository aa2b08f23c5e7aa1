"""FCN-8s on jaxseg_shapes/fcn (128 px scenes), sized for a 2-core CPU.

    python train.py --config configs/fcn8s_shapes.py --workdir runs/fcn8s
    python eval.py --config configs/fcn8s_shapes.py --workdir runs/fcn8s

Trained from scratch: VGG16 at width 1/16 with BatchNorm (`model.batch_norm`), Adam 3e-3
with poly decay, 800 steps of batch 8 of 128 px scenes whose classes have their own hues;
the same budget for 32s / 16s / 8s.

Measured (docs/fcn.md): validation mean IU 0.872 (pixel accuracy 0.984); FCN-16s 0.741,
FCN-32s 0.499 with the same budget. scripts/demo.sh runs this config.
"""

from jaxseg.config import base_config


def get_config():
    config = base_config()
    config.model.name = "fcn8s"
    config.model.width = 0.0625
    config.model.dropout_rate = 0.0
    config.model.batch_norm = True
    config.dataset.name = "jaxseg_shapes"
    config.dataset.config = "fcn"
    config.dataset.image_size = 128
    config.dataset.eval_image_size = 128
    config.dataset.scale_range = (1.0, 1.0)
    config.batch_size = 8
    config.num_train_steps = 800
    config.log_every_steps = 25
    config.eval_every_steps = 400
    config.checkpoint_every_steps = 400
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "poly"
    config.optimizer.warmup_steps = 20
    config.eval.batch_size = 20
    return config
