"""Evaluates a trained workdir: `python eval.py --config CONFIG --workdir DIR`.

Uses the best checkpoint (or `--config.eval.checkpoint=STEP`), prints the metrics table
and writes `<workdir>/eval/metrics.json` and pictures in `<workdir>/eval/pictures/`.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxseg.evaluation.run import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir written by train.py.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
