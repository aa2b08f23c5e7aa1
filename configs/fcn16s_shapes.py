"""FCN-16s on jaxseg_shapes/fcn (128 px scenes), sized for a 2-core CPU.

    python train.py --config configs/fcn16s_shapes.py --workdir runs/fcn16s
    python eval.py --config configs/fcn16s_shapes.py --workdir runs/fcn16s

Trained from scratch (the model's He init, Adam, poly decay), batch 8 of 128 px
crops, the same budget for 32s / 16s / 8s.

Not run yet (no measured result); staged: add --config.init_from=runs/fcn32s.
"""

from configs import fcn8s_shapes


def get_config():
    """FCN-8s's recipe and budget, with the stride-16 head."""
    config = fcn8s_shapes.get_config()
    config.model.name = "fcn16s"
    return config
