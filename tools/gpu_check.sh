#!/usr/bin/env bash
# One-command GPU validation: the CUDA tests, the benchmarks and one Markdown report
# (tools/gpu_check.py says what runs; the report's path is printed at the end).
#   tools/gpu_check.sh                 on a machine with a GPU, under 9 minutes on one
#   tools/gpu_check.sh --cpu-smoke     the same steps at tiny sizes on the CPU
# Python: $PYTHON, else the project's .venv, else python3. Nothing is installed or downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/gpu_check.py "$@"
