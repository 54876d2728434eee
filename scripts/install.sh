#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its pinned, CPU-only stack.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_CONSTRAINT="$PWD/requirements/constraints.txt"
FIND_LINKS=()
if [ -n "${PIP_FIND_LINKS:-}" ]; then FIND_LINKS=(--find-links "$PIP_FIND_LINKS"); fi
# torch first, from the machine-local CPU wheel; everything after it is resolved against that pin.
.venv/bin/python -m pip install -q "${FIND_LINKS[@]}" "torch==2.13.0+cpu"
.venv/bin/python -m pip install -q "${FIND_LINKS[@]}" -e ".[dev]"
