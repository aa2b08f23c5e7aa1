#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on the device machine, one H100 / H200.
#
# Through the device tool, from the repository root, as is:
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
# It prints the table last (the reply's output_tail) and writes gpu_check.log and
# gpu_check.json under $OUT. The script stops its own runs at --deadline (420 s), so the
# call ends within about 7.5 minutes; with the machine's start that is about 9 of the 15
# minutes of device time. If it failed early (say an import error, in under 3 minutes), fix
# it and call again at once: the machine is still warm for 30 s and its compilation cache
# in /tmp is reused. A second full call does not fit; rerun only what is missing, e.g.
#     run(command="bash benchmarks/gpu_check.sh --only mask_rcnn --deadline 200", timeout_s=280)
# and call give_back afterwards unless you rerun at once.
#
# Extra arguments pass through to gpu_check.py (--steps, --warmup, --only, --deadline, ...).
# The image's python3 has jax, flax, optax, orbax, torch and torchvision but not grain,
# tensorflow-datasets, ml-collections or pycocotools; --block-missing makes sure of that.
set -o pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# A retry on the same (warm) machine reads its compiled programs back instead of compiling.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxseg-gpu-check-cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu \
  --format=csv,noheader || true
echo "compilation cache $JAX_COMPILATION_CACHE_DIR: $(ls "$JAX_COMPILATION_CACHE_DIR" 2>/dev/null | wc -l) entries"
python3 benchmarks/gpu_check.py --block-missing --deadline 420 --json "$out/gpu_check.json" "$@" \
  2>&1 | tee "$out/gpu_check.log"
