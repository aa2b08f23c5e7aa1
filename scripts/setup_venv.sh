#!/usr/bin/env bash
# Creates .venv beside this repo (once) and installs jaxseg with the extras named in $1.
# Usage: scripts/setup_venv.sh [EXTRAS]      e.g. scripts/setup_venv.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
log=.venv/pip-install.log
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip >"$log" 2>&1 || { cat "$log"; exit 1; }
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# A stamp keeps a second run from re-resolving when nothing changed.
stamp=".venv/.installed-$(echo "$extras" | tr -c 'a-z0-9' _)$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "installing jaxseg${extras:+[$extras]} into .venv (log: $log) ..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >>"$log" 2>&1 \
    || { cat "$log"; exit 1; }
  case ",$extras," in
    *,test,* | *,onnx,*)  # without its dependencies: see the onnx extra in pyproject.toml
      .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
        "jax2onnx==0.17.*" >>"$log" 2>&1 || { cat "$log"; exit 1; } ;;
  esac
  touch "$stamp"
fi
