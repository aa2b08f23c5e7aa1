#!/usr/bin/env bash
# The main job: sets up .venv (runtime dependencies only) and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec .venv/bin/python examples/roi_pool_vs_roi_align.py "$@"
