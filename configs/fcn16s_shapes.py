"""FCN-16s on jaxseg_shapes/fcn (128 px scenes), sized for a 2-core CPU.

    python train.py --config configs/fcn16s_shapes.py --workdir runs/fcn16s
    python eval.py --config configs/fcn16s_shapes.py --workdir runs/fcn16s

FCN-8s's recipe and budget (configs/fcn8s_shapes.py) with the stride-16 head; staged
training as in the paper: add --config.init_from=runs/fcn32s.

Measured (docs/fcn.md): validation mean IU 0.741 (pixel accuracy 0.965) from scratch;
train.py 1154 s at load average 6-7.
"""

from configs import fcn8s_shapes


def get_config():
    """FCN-8s's recipe and budget, with the stride-16 head."""
    config = fcn8s_shapes.get_config()
    config.model.name = "fcn16s"
    return config
