"""The compile report: train.py's steps compiled for a TPU slice (or this machine), read back.

    python -m jaxseg.compile_report --config configs/fcn8s_voc.py --topology v5e:2x2 \\
        --config.dtype=bfloat16 --config.batch_size=32 --output report.json

    from jaxseg.compile_report import compile_report, topology_target
    report = compile_report(config, topology_target("v5e:2x2"))

For each of the train and eval steps: memory per chip against the chip's HBM, compiled
FLOPs and HBM bytes per image beside an analytic FLOP count, the roofline bound on step
time and images/s, compile time, the while loops with bounds on their trip counts (the
step's sequential depth), and HBM traffic by source op. `--topology` needs libtpu
(`pip install 'jaxseg[tpu]'`) but no TPU. See docs/scaling.md.
"""

from jaxseg.compile_report.analytic import FlopCount, count_flops
from jaxseg.compile_report.report import compile_report, eval_input_spec, make_report_task
from jaxseg.compile_report.table import format_report
from jaxseg.compile_report.target import (
    CHIPS,
    ChipFacts,
    MissingLibtpuError,
    Target,
    local_target,
    topology_target,
)

__all__ = [
    "CHIPS",
    "ChipFacts",
    "FlopCount",
    "MissingLibtpuError",
    "Target",
    "compile_report",
    "count_flops",
    "eval_input_spec",
    "format_report",
    "local_target",
    "make_report_task",
    "topology_target",
]
