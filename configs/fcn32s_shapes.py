"""FCN-32s on jaxseg_shapes/fcn (128 px scenes), sized for a 2-core CPU.

    python train.py --config configs/fcn32s_shapes.py --workdir runs/fcn32s
    python eval.py --config configs/fcn32s_shapes.py --workdir runs/fcn32s

FCN-8s's recipe and budget (configs/fcn8s_shapes.py) with the stride-32 head.

Measured (docs/fcn.md): validation mean IU 0.499 (pixel accuracy 0.933; IU of bars 0.001:
a stride-32 prediction cannot draw them); train.py 640 s at load average 5-7.
"""

from configs import fcn8s_shapes


def get_config():
    """FCN-8s's recipe and budget, with the stride-32 head."""
    config = fcn8s_shapes.get_config()
    config.model.name = "fcn32s"
    return config
