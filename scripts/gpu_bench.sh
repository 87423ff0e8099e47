#!/usr/bin/env bash
# One command on the GPU machine: set up, check correctness, time the whole grid.
#   bash scripts/gpu_bench.sh [benchmarks/gpu/run_all.py options, e.g. --skip 4 --budget 500]
# Installs the wheels carried in .whl/ (pydantic and friends; the image has no pydantic), imports
# sliminfer from this working tree, writes gpu_bench.json, bench-<model>.json, PNG plots and
# gpu_bench.log under $OUT (default ./out), and prints the tables last. Random weights, speed only.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "warning: installing the carried wheels failed; going on"
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "note: no .whl/ folder; pydantic must already be importable"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
python3 benchmarks/gpu/run_all.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
exit "${PIPESTATUS[0]}"
