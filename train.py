"""Trains a config: `python train.py --config configs/fcn8s_shapes.py --workdir runs/fcn8s`.

Running it again on the same workdir resumes from the latest checkpoint (exactly: same
data, same result as a run never stopped); SIGTERM saves a checkpoint and exits. Any config
key can be overridden, e.g. `--config.num_train_steps=200`; a workdir started with another
model, dataset, optimiser or seed is refused unless `--allow_config_change`.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxseg.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and metrics.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir that was started with a different config (model, data, optimiser...).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    train_and_evaluate(
        _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
    )


if __name__ == "__main__":
    app.run(main)
