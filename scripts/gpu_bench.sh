#!/usr/bin/env bash
# One command on the GPU machine: set up, check correctness, time the whole grid.
#   bash scripts/gpu_bench.sh [benchmarks/gpu/run_all.py options, e.g. --skip 4 --budget 500]
# Sets up through scripts/gpu_env.sh (carried wheels, PYTHONPATH, OUT), writes gpu_bench.json,
# bench-<model>.json, PNG plots and gpu_bench.log under $OUT (default ./out), and prints the tables
# last. Random weights, speed only.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
python3 benchmarks/gpu/run_all.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
exit "${PIPESTATUS[0]}"
