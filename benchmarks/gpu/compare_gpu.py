"""The full comparison on one GPU, in about 8 minutes on an H200: one ``sliminfer compare`` run.

Speed: the Llama-3.1-8B shape with random bf16 weights, TTFT at 32k and 128k, end to end (32k prompt +
256 greedy tokens, the static decode) and prompt KV memory, against every stock variant. Accuracy:
SmolLM2-135M-Instruct (real weights), needle and passkey, 100 samples per (task, config) over 1k-8k
tokens (4 lengths x 5 depths x 5), with 95 % bootstrap intervals. Rows: the recommended set below,
those of them that exist as presets (a missing one is named and left out), or ``--rows``.

    python3 benchmarks/gpu/compare_gpu.py --out OUT [--rows A B ...] [--samples N] [--dry-run]

On this project's GPU machine the image has no pydantic and no network: install the carried wheels
first and give the default model's GGUF and the essays in a cache folder, e.g.
``pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site:$PWD
SLIMINFER_CACHE=/path/with/downloads+data``. It prints its time estimate first and the report last;
everything goes under ``--out`` (compare.md, compare.json, compare_pareto.png, accuracy/, compare.log).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sliminfer.cli.main import main as sliminfer_main  # noqa: E402
from sliminfer.core.config import preset_names  # noqa: E402

#: unpruned; the SlimInfer paper schedule; its schedule scaled to SmolLM2's 8k context (prunes on the
#: accuracy side too); the peers; sparse prefill attention; SlimInfer combined with sparse attention
RECOMMENDED = ("origin", "llama-3.1-8b", "smollm2-135m", "llama-3.1-8b-lazyllm", "llama-3.1-8b-gemfilter",
               "llama-3.1-8b-fastkv", "llama-3.1-8b-flexprefill", "llama-3.1-8b-minference",
               "llama-3.1-8b-sparse")
LENGTHS = (32768, 131072)
E2E_LENGTH = 32768
NEW_TOKENS = 256
ACCURACY_LENGTHS = (1024, 2048, 4096, 8000)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
TASKS = ("needle", "passkey")

#: H200 seconds, measured by this script's first runs (2026-12-03): unpruned prefill of the 8B shape,
#: a pruned row's prefill as a share of it, one end-to-end run of a row (32k + 256, graph decode), the
#: stock end-to-end runs at 32k (each variant, its compile included), one accuracy sample, set-up
PREFILL_S = {32768: 1.3, 131072: 10.5}
PRUNED_SHARE = 0.45
ROW_E2E_S = 4.0
STOCK_E2E_S = 60.0
SAMPLE_S = 0.12
SETUP_S = 60.0


def estimate_s(rows: int, samples: int, repeats: int, warmup: int) -> float:
    """Seconds the run should take: every timed call runs ``warmup + repeats`` times."""
    runs = warmup + repeats
    stock = sum(2 * runs * PREFILL_S[n] for n in LENGTHS) + STOCK_E2E_S
    unpruned_row = sum(runs * PREFILL_S[n] for n in LENGTHS) + runs * ROW_E2E_S * 2
    pruned_row = PRUNED_SHARE * sum(runs * PREFILL_S[n] for n in LENGTHS) + runs * ROW_E2E_S
    cells = len(ACCURACY_LENGTHS) * len(DEPTHS)
    accuracy = rows * len(TASKS) * math.ceil(samples / cells) * cells * SAMPLE_S
    return SETUP_S + stock + unpruned_row + (rows - 1) * pruned_row + accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/compare-gpu"))
    parser.add_argument("--rows", nargs="+", help="configs (default: the recommended set that exists)")
    parser.add_argument("--samples", type=int, default=100, help="samples per (task, config)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="print the command and the estimate only")
    args, extra = parser.parse_known_args()
    rows = args.rows or [r for r in RECOMMENDED if r in preset_names()]
    missing = [r for r in RECOMMENDED if r not in rows] if not args.rows else []
    if missing:
        print(f"rows left out (no such preset here): {', '.join(missing)}")
    argv = ["compare", *rows, "--shape", "llama-3.1-8b", "--lengths", ",".join(map(str, LENGTHS)),
            "--e2e-lengths", str(E2E_LENGTH), "--new-tokens", str(NEW_TOKENS), "--decode", "static",
            "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--tasks", *TASKS,
            "--samples", str(args.samples), "--accuracy-lengths", *map(str, ACCURACY_LENGTHS),
            "--depths", *map(str, DEPTHS), "--out", str(args.out), *extra]
    estimate = estimate_s(len(rows), args.samples, args.repeats, args.warmup)
    print(f"rows: {' '.join(rows)}\nestimate: about {estimate / 60:.1f} min on an H200 "
          f"({len(rows)} rows, {args.samples} samples per task and row)\ncommand: sliminfer {' '.join(argv)}",
          flush=True)
    if args.dry_run:
        return 0
    start = time.perf_counter()
    code = sliminfer_main(argv)
    print(f"compare took {(time.perf_counter() - start) / 60:.1f} min (estimate {estimate / 60:.1f})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
