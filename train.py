"""Trains a config: `python train.py --config configs/fcn8s_shapes.py --workdir runs/fcn8s`.

Running it again on the same workdir resumes from the latest checkpoint (exactly: same
data, same result as a run never stopped); SIGTERM or Ctrl-C saves a checkpoint and exits
(a second Ctrl-C exits at once). Any config key can be overridden, also one the config file
leaves at its default, e.g. `--config.num_train_steps=200 --config.model.num_classes=3`; a
workdir started with another model, dataset, optimiser or seed is refused unless
`--allow_config_change`, and a workdir another run is training in is refused. The terminal
shows progress, evaluations and warnings; `--verbosity=0` adds every library's INFO lines.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxseg.runtime.cli import parse_flags, quiet_logging, run_main
from jaxseg.train import train_and_evaluate

# New attributes are accepted so that any documented key can be set from the command line;
# check_config then refuses a key that base_config does not know, with a did-you-mean.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file.", lock_config=False, accept_new_attributes=True
)
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
    quiet_logging()
    run_main(
        lambda: train_and_evaluate(
            _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value
        )
    )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
