#!/usr/bin/env bash
# The whole test suite: sets up .venv with the test extras, lints, runs pytest (slow tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh test
.venv/bin/ruff format --check .
.venv/bin/ruff check .
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
