"""The full comparison on one GPU, within about 8 minutes on an H200: one ``sliminfer compare`` run.

Speed: the Llama-3.1-8B shape with random bf16 weights, TTFT at 32k and 128k, end to end (32k prompt +
256 greedy tokens, the static decode replayed as a CUDA graph, not compiled: compiling each row's
decode step costs a minute or more per row) and prompt KV memory, against the stock variants.
Accuracy: SmolLM2-135M-Instruct (real weights), 100 samples per (task, config) over 1k-8k tokens
(4 lengths x 5 depths x 5), with 95 % bootstrap intervals. The ten recommended rows do not fit one
10-minute device call: run ``--accuracy-only`` first, then the same command without it and the same
``--out`` (on the same warm machine, --out in an ignored folder): the second run reuses the accuracy
records, adds the speed side and writes the one table. Rows: the recommended set below, those of
them that exist as presets (a missing one is named and left out), or ``--rows``. Tasks: needle, then
passkey, as many as the time budget holds (``--budget-min``, default 8); it refuses to start when not
even one fits (a device call is killed at 10 minutes, and compare writes its files at the end), unless
``--over-budget``. ``--tasks`` chooses them instead.

    python3 benchmarks/gpu/compare_gpu.py --out OUT [--rows A B ...] [--tasks needle passkey] [--dry-run]

On this project's GPU machine the image has no pydantic and no network: install the carried wheels
(pydantic and its three, gguf, wonderwords) first and give the default model's GGUF and the essays in a
cache folder, e.g. ``pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export
PYTHONPATH=/tmp/site:$PWD SLIMINFER_CACHE=/path/with/downloads+data``. It prints its estimate first
and the report last; everything goes under ``--out``.
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
#: accuracy side too); the token-pruning peers; FlexPrefill and MInference alone (every layer, every token
#: kept); SlimInfer with each of them on the layers that see the whole prompt
RECOMMENDED = ("origin", "llama-3.1-8b", "smollm2-135m", "llama-3.1-8b-lazyllm", "llama-3.1-8b-gemfilter",
               "llama-3.1-8b-fastkv", "llama-3.1-8b-flexprefill-only", "llama-3.1-8b-minference-only",
               "llama-3.1-8b-flexprefill", "llama-3.1-8b-minference")
LENGTHS = (32768, 131072)
E2E_LENGTH = 32768
NEW_TOKENS = 256
ACCURACY_LENGTHS = (1024, 2048, 4096, 8000)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
TASKS = ("needle", "passkey")  # in the order they are added while the budget holds

#: Seconds per unit, for the estimate. Prefill of the 8B shape (unpruned) and the graph decode's
#: ms/token: H100 figures of benchmarks/results/README.md (an H200 is not slower). Stock end to end at
#: 32k + 256: 21 s plain (cuDNN plan builds on Hopper, 77 ms/token: sliminfer/bench/stock.py), 7 s
#: without cuDNN, 7 s static plus its compilation (taken as 90 s). One accuracy sample: 0.29-0.37 s
#: measured on an H200 (2026-12-03) with the SmolLM2 shape's random weights, which never stop early;
#: real answers stop at the first newline, so 0.25 s is used. Set-up: both models, the conversion.
PREFILL_S = {32768: 1.39, 131072: 11.6}
PRUNED_PREFILL_S = {32768: 0.53, 131072: 3.67}
GRAPH_DECODE_S = 0.0099
STOCK_E2E_S = {"stock": 21.0, "stock_no_cudnn": 7.0, "stock_static": 7.0}
COMPILE_S = 90.0
SAMPLE_S = 0.25
SETUP_S = 45.0
STOCK = ("stock", "stock_no_cudnn", "stock_static")


def speed_estimate_s(rows: int, runs: int, stock: tuple[str, ...] = STOCK) -> float:
    """The speed side: every timed call runs ``runs`` (warm-up + repeats) times."""
    prefills = sum(m != "stock_static" for m in stock)  # stock_static's TTFT comes with its end-to-end run
    ttft = sum(prefills * runs * PREFILL_S[n] for n in LENGTHS)
    stock_e2e = sum(runs * STOCK_E2E_S[m] for m in stock)
    if "stock_static" in stock:
        stock_e2e += COMPILE_S + runs * PREFILL_S[E2E_LENGTH]
    decode = (NEW_TOKENS - 1) * GRAPH_DECODE_S
    unpruned = sum(runs * PREFILL_S[n] for n in LENGTHS) + runs * (PREFILL_S[E2E_LENGTH] + decode)
    pruned = sum(runs * PRUNED_PREFILL_S[n] for n in LENGTHS) + runs * (PRUNED_PREFILL_S[E2E_LENGTH] + decode)
    return ttft + stock_e2e + unpruned + max(rows - 1, 0) * pruned


def accuracy_estimate_s(rows: int, tasks: int, samples: int, done: int = 0) -> float:
    """The accuracy side, less ``done`` (row, sample) records that a re-run reuses."""
    cells = len(ACCURACY_LENGTHS) * len(DEPTHS)
    return max(rows * tasks * math.ceil(samples / cells) * cells - done, 0) * SAMPLE_S


def records_done(out: Path) -> int:
    """(row, sample) records already under ``out/accuracy``: a re-run with the same --out reuses them."""
    return sum(sum(1 for line in f.open() if line.strip()) for f in (out / "accuracy").glob("*.jsonl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/compare-gpu"))
    parser.add_argument("--rows", nargs="+", help="configs (default: the recommended set that exists)")
    parser.add_argument("--tasks", nargs="+", help="accuracy tasks (default: needle, then passkey, while they fit)")
    parser.add_argument("--samples", type=int, default=100, help="samples per (task, config)")
    parser.add_argument("--stock", default=",".join(STOCK), help="stock variants (comma list)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget-min", type=float, default=8.0, help="minutes the run may take")
    parser.add_argument("--over-budget", action="store_true", help="run even when the estimate exceeds the budget")
    parser.add_argument("--accuracy-only", action="store_true",
                        help="only the accuracy side; a later run with the same --out reuses its records and adds "
                             "the speed side (two device calls of one table)")
    parser.add_argument("--dry-run", action="store_true", help="print the command and the estimate only")
    args, extra = parser.parse_known_args()
    rows = args.rows or [r for r in RECOMMENDED if r in preset_names()]
    missing = [r for r in RECOMMENDED if r not in rows] if not args.rows else []
    if missing:
        print(f"rows left out (no such preset here): {', '.join(missing)}")
    runs = args.repeats + args.warmup
    stock = tuple(m for m in args.stock.split(",") if m)
    fixed = SETUP_S + (0.0 if args.accuracy_only else speed_estimate_s(len(rows), runs, stock))
    done = records_done(args.out)
    tasks = list(args.tasks or [])
    if not tasks:  # as many as fit, in order
        for task in TASKS:
            if fixed + accuracy_estimate_s(len(rows), len(tasks) + 1, args.samples, done) <= 60 * args.budget_min:
                tasks.append(task)
    estimate = fixed + accuracy_estimate_s(len(rows), max(len(tasks), 1), args.samples, done)
    argv = ["-v", "compare", *rows, "decode.compile=false", "--shape", "llama-3.1-8b",
            "--lengths", ",".join(map(str, LENGTHS)), "--e2e-lengths", str(E2E_LENGTH),
            "--new-tokens", str(NEW_TOKENS), "--stock", args.stock, "--decode", "static", "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--tasks", *(tasks or TASKS[:1]), "--samples", str(args.samples),
            "--accuracy-lengths", *map(str, ACCURACY_LENGTHS), "--depths", *map(str, DEPTHS),
            "--out", str(args.out), *(["--accuracy-only"] if args.accuracy_only else []), *extra]
    print(f"rows: {' '.join(rows)}\ntasks: {' '.join(tasks) or '(none fits)'}, {args.samples} samples per task "
          f"and row\nestimate: about {estimate / 60:.1f} min (speed {(fixed - SETUP_S) / 60:.1f}, accuracy "
          f"{(estimate - fixed) / 60:.1f}, {done} records reused, set-up {SETUP_S / 60:.1f}); budget "
          f"{args.budget_min:g} min\n"
          f"command: sliminfer {' '.join(argv)}", flush=True)
    if not tasks or estimate > 60 * args.budget_min:
        print(f"over the budget of {args.budget_min:g} min: give fewer --rows, one task (--tasks needle), "
              "--stock stock_no_cudnn (no compiled stock), or --over-budget")
        if not args.over_budget:
            return 2
    if args.dry_run:
        return 0
    start = time.perf_counter()
    code = sliminfer_main(argv)
    print(f"compare took {(time.perf_counter() - start) / 60:.1f} min (estimate {estimate / 60:.1f})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
