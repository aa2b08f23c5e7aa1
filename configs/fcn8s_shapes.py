"""FCN-8s on jaxseg_shapes: the embedded default, sized for a CPU.

python train.py --config configs/fcn8s_shapes.py --workdir runs/fcn8s
python eval.py --config configs/fcn8s_shapes.py --workdir runs/fcn8s
"""

from jaxseg.train.config import base_config


def get_config():
    config = base_config()
    config.model.name = "fcn8s"
    config.model.width = 0.0625
    config.model.dropout_rate = 0.0
    config.dataset.name = "jaxseg_shapes"
    config.dataset.config = "small"
    config.dataset.image_size = 64
    config.dataset.eval_image_size = 64
    config.dataset.scale_range = (1.0, 1.0)
    config.batch_size = 16
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 100
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.eval.batch_size = 32
    return config
