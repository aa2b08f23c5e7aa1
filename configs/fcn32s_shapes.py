"""FCN-32s on jaxseg_shapes/fcn (128 px scenes), sized for a 2-core CPU.

    python train.py --config configs/fcn32s_shapes.py --workdir runs/fcn32s
    python eval.py --config configs/fcn32s_shapes.py --workdir runs/fcn32s

Trained from scratch (the model's He init, Adam, poly decay), batch 8 of 128 px
crops, the same budget for 32s / 16s / 8s.

Measured (docs/fcn.md): validation mean IU 0.211 after 400 steps; train.py 569 s
and eval.py 13 s on 2 CPU cores shared with other jobs.
"""

from configs import fcn8s_shapes


def get_config():
    """FCN-8s's recipe and budget, with the stride-32 head."""
    config = fcn8s_shapes.get_config()
    config.model.name = "fcn32s"
    return config
