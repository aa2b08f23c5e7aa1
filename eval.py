"""Evaluates a trained workdir, or predicts on image files.

    python eval.py --config CONFIG --workdir DIR [--output OUT]
    python eval.py --config CONFIG --workdir DIR --images 'photos/*.jpg' [--output OUT]
    python eval.py --workdir CONVERTED_DIR --images photos/

Uses the best checkpoint (or `--config.eval.checkpoint=STEP`). Without `--images`: prints
the metrics table and writes `metrics.json` and pictures in `pictures/` of `<workdir>/eval/`
(or `--output`). With `--images`: writes an overlay PNG per image and `predictions.json`
into `<workdir>/images/` (or `--output`); a folder written by `python -m jaxseg.convert`
needs no config. With `--output`, nothing is written into the workdir (it may be read-only).
A mistake (a `--config.*` typo, no checkpoint, an unwritable folder) is one line, and
`--verbosity=0` adds every library's INFO lines to the terminal.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from jaxseg.evaluation.images import DEFAULT_MAX_SIZE, NothingPredictedError
from jaxseg.inference.run import evaluate, predict_images
from jaxseg.runtime.cli import parse_flags, quiet_logging, run_main

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file.", lock_config=False, accept_new_attributes=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of train.py, or a converted folder.")
_IMAGES = flags.DEFINE_string(
    "images",
    None,
    "Image files to predict on: a quoted glob ('photos/*.jpg'), a file, or a directory (its "
    "image files). Files that are not readable images are skipped and named.",
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "Folder for the results (default <workdir>/eval, or <workdir>/images with --images); "
    "with it nothing is written into the workdir, which may then be read-only.",
)
_SCORE = flags.DEFINE_float("score_threshold", 0.5, "Instances drawn and listed (--images).")
_MAX_SIZE = flags.DEFINE_integer(
    "max_size",
    DEFAULT_MAX_SIZE,
    "--images: larger images are shrunk so that their longer side is at most this many "
    "pixels, predicted, and the results mapped back to their own pixels (bounds memory). "
    "0: no limit.",
    lower_bound=0,
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(
            f"unexpected arguments: {argv[1:]} (quote an --images glob so that the shell "
            "does not expand it)"
        )
    quiet_logging()
    if _IMAGES.value:
        try:
            run_main(
                lambda: predict_images(
                    _CONFIG.value,
                    _WORKDIR.value,
                    _IMAGES.value,
                    output=_OUTPUT.value,
                    score_threshold=_SCORE.value,
                    max_size=_MAX_SIZE.value,
                )
            )
        except NothingPredictedError as e:
            sys.exit(f"eval.py: {e}")
        return
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (except with --images on a converted folder)")
    run_main(lambda: evaluate(_CONFIG.value, _WORKDIR.value, output=_OUTPUT.value))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
