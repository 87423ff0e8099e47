"""Collect the ``shape=`` and ``compare`` lines of tp_runs.sh logs into one JSON file and a Markdown table.

    python benchmarks/gpu/tp_summary.py benchmarks/results/h200x2-2026-11-23/*.log --out benchmarks/results/h200x2-2026-11-23/tp_runs.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

RUN = re.compile(r"shape=(\S+) tp=(\d+) tokens=(\d+) layers=\[([\d, ]+)\] slim_ttft_s=(\S+) stock_ttft_s=(\S+) "
                 r"kept=(\d+) kv_bytes_per_rank=(\d+)")
COMPARE = re.compile(r"compare (\S+) (\S+): kept positions equal in (\d+)/(\d+) layers(?: \(share of the same "
                     r"positions: min (\S+), mean (\S+)\))?; last-token logits max \|diff\| (\S+) \(max \|logit\| "
                     r"(\S+)\); same argmax (\w+)")
STOCK = re.compile(r"stock transformers, same two runs: last-token logits max \|diff\| (\S+); same argmax (\w+)")


def parse(path: Path) -> dict[str, list[dict[str, Any]]]:
    runs, compares, command = [], [], ""
    for line in path.read_text().splitlines():
        if line.startswith("+ "):
            command = line
        elif m := RUN.search(line):
            slim, stock = float(m[5]), float(m[6])
            timed = "--repeat 1 " not in command + " "  # one run includes the warm-up: a check, not a timing
            runs.append({"log": path.name, "command": command[2:], "timed": timed, "shape": m[1], "tp": int(m[2]),
                         "tokens": int(m[3]),
                         "prune_layers": [int(x) for x in m[4].split(",")], "slim_ttft_s": slim,
                         "stock_ttft_s": None if stock != stock else stock,
                         "speedup": None if stock != stock else stock / slim,
                         "kept_last_layer": int(m[7]), "kv_bytes_per_rank": int(m[8])})
        elif m := COMPARE.search(line):
            compares.append({"log": path.name, "tp1": m[1], "tp2": m[2], "layers_equal": int(m[3]),
                             "layers": int(m[4]), "share_min": None if m[5] is None else float(m[5]),
                             "share_mean": None if m[6] is None else float(m[6]), "logits_max_abs_diff": float(m[7]),
                             "max_abs_logit": float(m[8]), "same_argmax": m[9] == "True"})
        elif (m := STOCK.search(line)) and compares:
            compares[-1].update(stock_logits_max_abs_diff=float(m[1]), stock_same_argmax=m[2] == "True")
    return {"runs": runs, "compares": compares}


def table(result: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| shape | tp | prompt | stock TTFT | sliminfer TTFT | speedup | KV bytes per rank |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if not r["timed"]:
            continue
        stock = "-" if r["stock_ttft_s"] is None else f"{r['stock_ttft_s']:.3f} s"
        speed = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"| {r['shape']} | {r['tp']} | {r['tokens']:,} | {stock} | {r['slim_ttft_s']:.3f} s | {speed} | "
                     f"{r['kv_bytes_per_rank'] / 2**30:.2f} GiB |")
    lines += ["", "Runs with --repeat 1 (comparisons only: their one prefill includes the warm-up) are in the JSON, "
              "not in this table.", "", "| files compared (tp=1 vs tp=2) | kept positions equal | share kept by both (min / mean) | "
              "logits max abs diff | stock's logits max abs diff | same argmax |", "|---|---|---|---|---|---|"]
    for c in result["compares"]:
        share = "-" if c["share_min"] is None else f"{c['share_min']:.4f} / {c['share_mean']:.4f}"
        stock = c.get("stock_logits_max_abs_diff")
        lines.append(f"| {Path(c['tp1']).name} / {Path(c['tp2']).name} | {c['layers_equal']}/{c['layers']} layers | "
                     f"{share} | {c['logits_max_abs_diff']:.4g} | {'-' if stock is None else f'{stock:.4g}'} | "
                     f"{c['same_argmax']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    result: dict[str, list[dict[str, Any]]] = {"runs": [], "compares": []}
    for path in a.logs:
        for key, rows in parse(path).items():
            result[key] += rows
    latest = {(c["tp1"], c["tp2"]): c for c in result["compares"]}  # a file pair compared again: the later one
    result["compares"] = list(latest.values())
    a.out.write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
