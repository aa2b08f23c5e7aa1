"""Exports a trained workdir or a converted folder as a self-contained predictor.

    python -m jaxseg.export --workdir CONVERTED_DIR --output DIR [--canvas 800x1344] [--batch 4]
    python -m jaxseg.export --config CONFIG --workdir RUN --output DIR [--onnx]

Writes `DIR/predict.jaxexport` (jax.export StableHLO with resize, normalisation, the model
and post-processing inside), `DIR/variables.npz` and `DIR/jaxseg_export.json`; load it with
`jaxseg.export.load(DIR)`. The canvas (HEIGHTxWIDTH; multiples of 32 for Mask R-CNN)
defaults to the square that holds every image of the model's resize rule; larger images are
shrunk to fit. A
mistake (a wrong --workdir, a bad --canvas, a DIR that already holds an export) is one line
with exit status 2. See docs/deploy.md.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

import jaxseg.export
from jaxseg.config import ConfigError
from jaxseg.export.writer import check_output_folder, export_predictor
from jaxseg.predict import Predictor
from jaxseg.runtime.cli import parse_flags, quiet_logging, run_main
from jaxseg.serving import parse_canvas

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (not for a converted folder).", lock_config=False
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of train.py, or a converted folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the export into (new or empty).")
_CANVAS = flags.DEFINE_string(
    "canvas",
    None,
    "HEIGHTxWIDTH of the network input (multiples of 32 for Mask R-CNN), e.g. 800x1344.",
)
_BATCH = flags.DEFINE_integer("batch", 1, "Images per call (a short batch is padded).")
_SCORE = flags.DEFINE_float("score_threshold", 0.5, "Default score threshold of instances.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an export already in --output.")
_ONNX = flags.DEFINE_bool(
    "onnx", False, "Also write predict.onnx (semantic models; needs jax2onnx, docs/deploy.md)."
)
_PLATFORMS = flags.DEFINE_list(
    "platforms", None, "Platforms to lower for: cpu, cuda, rocm, tpu (default: this machine's)."
)
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_logging()

    def export():
        try:
            canvas = parse_canvas(_CANVAS.value, what="--canvas") if _CANVAS.value else None
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if _BATCH.value < 1:
            raise ConfigError(f"--batch must be >= 1, got {_BATCH.value}")
        check_output_folder(_OUTPUT.value, _OVERWRITE.value)  # before anything is restored
        config = _CONFIG.value
        predictor = Predictor.from_workdir(
            _WORKDIR.value,
            config,
            canvas=canvas,
            batch_size=_BATCH.value,
            score_threshold=_SCORE.value,
        )
        path = export_predictor(
            predictor,
            _OUTPUT.value,
            overwrite=_OVERWRITE.value,
            platforms=_PLATFORMS.value,
            fallback_side=int(config.dataset.eval_image_size) if config is not None else None,
            onnx=_ONNX.value,
        )
        source = predictor.source
        metadata = jaxseg.export.load(path).metadata
        canvas = "x".join(str(side) for side in metadata["canvas"])
        print(
            f"exported {source.get('model')} (step {source.get('step')} of "
            f"{source.get('workdir')}), canvas {canvas}, batch {metadata['batch']}, to {path}",
            file=sys.stdout,
            flush=True,
        )

    run_main(export)


if __name__ == "__main__":
    sys.argv[0] = "python -m jaxseg.export"  # how errors and --help name the program
    app.run(main, flags_parser=parse_flags)
