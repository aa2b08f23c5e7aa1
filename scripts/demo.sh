#!/usr/bin/env bash
# The main job: sets up .venv (runtime dependencies only), trains FCN-8s on the synthetic
# jaxseg_shapes dataset (generated on first use, no download), then evaluates it: the metrics
# table, runs/fcn8s_shapes/eval/metrics.json and the pictures in runs/fcn8s_shapes/eval/pictures.
# Extra arguments are config overrides for both, e.g. --config.num_train_steps=200.
# Run again on the same workdir, it resumes (or, when finished, only evaluates).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
config=configs/fcn8s_shapes.py
workdir="${WORKDIR:-runs/fcn8s_shapes}"
.venv/bin/python train.py --config "$config" --workdir "$workdir" "$@"
.venv/bin/python eval.py --config "$config" --workdir "$workdir" "$@"
