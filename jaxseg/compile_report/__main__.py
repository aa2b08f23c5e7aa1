"""Compiles train.py's steps for a TPU slice (or this machine) and reports what XLA made of them.

    python -m jaxseg.compile_report --config configs/fcn8s_voc.py --topology v5e:2x2 \\
        --config.dtype=bfloat16 --config.batch_size=32 --output fcn8s_v5e.json
    python -m jaxseg.compile_report --config configs/mask_rcnn_shapes.py --local

`--topology` needs libtpu (`pip install 'jaxseg[tpu]'`), no TPU. See docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.")
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "A TPU slice to compile for without a TPU: v5e:2x2, v6e:2x4, v4:2x2x1..."
)
_LOCAL = flags.DEFINE_bool("local", False, "Compile for this machine's own devices instead.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the report as JSON to this file.")
_STEPS = flags.DEFINE_list("steps", ["train", "eval"], "Which steps to compile.")
_TOP = flags.DEFINE_integer("top", 15, "Source ops of HBM traffic to list.")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes",
    None,
    "The dataset's class count, for datasets whose class names live in their files (COCO: "
    "80), which the report does not read; sets config.model.num_classes.",
)
_HLO_DIR = flags.DEFINE_string("hlo_dir", None, "Write each step's optimised HLO text here.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(_TOPOLOGY.value) == bool(_LOCAL.value):
        raise app.UsageError("give exactly one of --topology=<chip>:<shape> or --local")
    from jaxseg.compile_report.report import compile_report
    from jaxseg.compile_report.table import format_report
    from jaxseg.compile_report.target import MissingLibtpuError, local_target, topology_target

    try:
        target = topology_target(_TOPOLOGY.value) if _TOPOLOGY.value else local_target()
    except MissingLibtpuError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = _CONFIG.value
    if _NUM_CLASSES.value:
        with config.unlocked():  # config_flags locks the config against new keys
            config.model.num_classes = _NUM_CLASSES.value
    report = compile_report(
        config, target, steps=tuple(_STEPS.value), top=_TOP.value, hlo_dir=_HLO_DIR.value
    )
    print(format_report(report))
    if _OUTPUT.value:
        path = os.path.expanduser(_OUTPUT.value)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    app.run(main)
