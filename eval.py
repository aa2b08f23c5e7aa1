"""Evaluates a trained workdir, or predicts on image files.

    python eval.py --config CONFIG --workdir DIR
    python eval.py --config CONFIG --workdir DIR --images 'photos/*.jpg' [--output OUT]
    python eval.py --workdir CONVERTED_DIR --images 'photos/*.jpg'

Uses the best checkpoint (or `--config.eval.checkpoint=STEP`). Without `--images`: prints
the metrics table and writes `<workdir>/eval/metrics.json` and pictures in
`<workdir>/eval/pictures/`. With `--images GLOB`: writes an overlay PNG per image and
`predictions.json` into `<workdir>/images/` (or `--output`); a folder written by
`python -m jaxseg.convert` needs no config.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxseg.evaluation.run import evaluate, predict_images

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of train.py, or a converted folder.")
_IMAGES = flags.DEFINE_string("images", None, "Glob of image files to predict on.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for --images (default <workdir>/images).")
_SCORE = flags.DEFINE_float("score_threshold", 0.5, "Instances drawn and listed (--images).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _IMAGES.value:
        predict_images(
            _CONFIG.value,
            _WORKDIR.value,
            _IMAGES.value,
            output=_OUTPUT.value,
            score_threshold=_SCORE.value,
        )
        return
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (except with --images on a converted folder)")
    if _OUTPUT.value:
        raise app.UsageError("--output goes with --images")
    evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
