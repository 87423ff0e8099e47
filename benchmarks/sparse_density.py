"""How sparse ``flexprefill`` and ``minference`` really are on a real model and real text (CPU is fine).

Why: a sparse method's speed depends on the density it chooses, and that depends on the model and the
text, not on the method's name. This runs the embedded default model (SmolLM2-135M-Instruct, real
weights, fp32) on the Paul Graham essays at 2k / 4k / 8k tokens with each method at its paper defaults
(``min_tokens`` lowered so that they engage at these lengths; every layer, no pruning) and reports the
fraction of causal blocks each layer and head computed, plus FlexPrefill's query-aware head count.

    .venv/bin/python benchmarks/sparse_density.py --out benchmarks/results/sparse-density-cpu
    .venv/bin/python benchmarks/sparse_density.py --methods flexprefill-g95 minference-scaled \
        --out benchmarks/results/sparse-density-cpu-eval-configs     # the settings of the accuracy configs

SmolLM2-135M allows 8192 positions (max_position_embeddings), so 8k is 8192 tokens, within its range.
Writes ``density.json`` (every layer's per-head densities) and ``density.md`` (the mean per layer).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import sliminfer
from sliminfer import SlimPipeline
from sliminfer.assets.texts import essay_text
from sliminfer.core.config import ModelSection
from sliminfer.core.loading import load_model

EVAL_CONFIGS = Path(__file__).resolve().parents[1] / "eval" / "configs"


def eval_attention(stem: str) -> dict[str, Any]:
    """The ``attention:`` section of ``eval/configs/<stem>.yaml``, so the densities are those of the very
    settings the accuracy records were made with."""
    return yaml.safe_load((EVAL_CONFIGS / f"{stem}.yaml").read_text(encoding="utf-8"))["attention"]


#: the ``attention:`` section of each method by label: the paper defaults, and the settings the accuracy
#: configs use for SmolLM2 at 2k-8k
METHODS: dict[str, dict[str, Any]] = {
    "flexprefill": {"name": "flexprefill", "min_tokens": 1024},
    "minference": {"name": "minference", "min_tokens": 1024},
    "flexprefill-g95": eval_attention("smollm2-135m-flexprefill-g95"),
    "minference-scaled": eval_attention("smollm2-135m-minference"),
}


def essay_ids(tokenizer: Any, n: int) -> torch.Tensor:
    """The first ``n`` tokens of the essays (plain text, no chat template)."""
    ids = tokenizer(essay_text(progress=False)[: n * 8], add_special_tokens=False)["input_ids"]
    if len(ids) < n:
        raise SystemExit(f"the essays gave {len(ids)} tokens, fewer than {n}")
    return torch.tensor([ids[:n]])


def run_one(model: Any, tokenizer: Any, method: str, ids: torch.Tensor) -> dict[str, Any]:
    """One prefill with ``method`` on every layer: per layer the per-head densities (and, for
    FlexPrefill, how many heads the pattern test made query-aware)."""
    pipe = SlimPipeline.from_pretrained(model, tokenizer, config={"attention": METHODS[method]})
    strategy = pipe.forward.attention
    query_aware: list[int] = []
    if METHODS[method]["name"] == "flexprefill":  # record the pattern test's outcome of each layer, in layer order
        estimate = strategy.estimate

        def recording(query: torch.Tensor, key: torch.Tensor, scale: float) -> Any:
            out = estimate(query, key, scale)
            query_aware.append(int(out.query_aware.sum()))
            return out

        strategy.estimate = recording
    start = time.perf_counter()
    pipe.prefill(ids)
    seconds = time.perf_counter() - start
    layers = [strategy.densities[layer][0].tolist() for layer in sorted(strategy.densities)]
    row: dict[str, Any] = {"method": method, "tokens": ids.shape[1], "prefill_s": round(seconds, 2),
                           "options": dict(strategy.config.model_dump()),
                           "mean_density": statistics.fmean(x for heads in layers for x in heads),
                           "layer_mean": [statistics.fmean(heads) for heads in layers], "per_head": layers}
    if query_aware:
        row["query_aware_heads"] = query_aware
    return row


def markdown(rows: list[dict[str, Any]], heads: int) -> str:
    """Mean density per layer (rows) for each method and length (columns)."""
    head = [f"{r['method']} {r['tokens']}" for r in rows]
    lines = ["| layer | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for layer in range(len(rows[0]["layer_mean"])):
        cells = []
        for r in rows:
            cell = f"{100 * r['layer_mean'][layer]:.1f} %"
            if "query_aware_heads" in r:
                cell += f" ({r['query_aware_heads'][layer]}/{heads} qa)"
            cells.append(cell)
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{100 * r['mean_density']:.1f} %**" for r in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--methods", nargs="+", default=["flexprefill", "minference"], choices=sorted(METHODS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sparse-density-cpu"))
    args = parser.parse_args()
    model, tokenizer = load_model(ModelSection(source="smollm2-135m-instruct", dtype="float32", device="cpu"))
    heads = int(model.config.num_attention_heads)
    rows = []
    for n in args.lengths:
        ids = essay_ids(tokenizer, n)
        for method in args.methods:
            rows.append(run_one(model, tokenizer, method, ids))
            print(f"{method} at {n} tokens: mean density {100 * rows[-1]['mean_density']:.1f} % "
                  f"({rows[-1]['prefill_s']} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model": "SmolLM2-135M-Instruct (real weights, fp32, CPU)", "text": "Paul Graham essays, first N tokens",
            "layers": "every layer (no pruning)", "max_position_embeddings": int(model.config.max_position_embeddings),
            "torch": torch.__version__, "sliminfer": sliminfer.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads()}
    (args.out / "density.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    summary = ("Fraction of causal 128-token blocks computed, mean over the heads of each layer "
               f"({meta['model']}; {meta['text']}; {meta['layers']}; qa: heads FlexPrefill made query-aware).")
    (args.out / "density.md").write_text(f"# Sparse prefill density\n\n{summary}\n\n{markdown(rows, heads)}\n")
    print(markdown(rows, heads))


if __name__ == "__main__":
    main()
