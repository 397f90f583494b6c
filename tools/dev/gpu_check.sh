#!/usr/bin/env bash
# One-command GPU validation: the user's path end to end on the GPU (demo, determinism, the
# scripts, the app), the CUDA tests, the benchmarks and their targets, one Markdown report
# (tools/dev/gpu_check.py says what runs; the report's path is printed first and last).
#   tools/dev/gpu_check.sh                      on a machine with a GPU: about 6 minutes on one H200
#   tools/dev/gpu_check.sh --only predict,app   these steps again (and what they need, if missing)
#   tools/dev/gpu_check.sh --cpu-smoke          every step at tiny sizes on the CPU
# Python: $PYTHON, else the project's .venv, else python3. Nothing is installed or downloaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/dev/gpu_check.py "$@"
