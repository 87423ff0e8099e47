"""Sparse prefill attention on the GPU: the block-sparse kernel alone, then TTFT with and without pruning.

Why: the sparse strategies pay for an estimate and a mask before their kernel saves anything, so the
kernel's speed at a density, what building its mask costs, and what a whole prefill gains (alone and
on top of pruning) are measured separately, each against its dense baseline in the same process.

1. kernel (``--kernel-lengths``, default 32k and 128k; Llama-3.1-8B's 32 query / 8 KV heads of 128):
   dense causal SDPA against FlexAttention over FlexPrefill's top blocks at each ``--densities`` (5 / 10
   / 20 %), ms and TFLOP/s (sparse: on the blocks computed), with the selection (estimate + block
   indices) and the BlockMask build timed apart; plus each method's own selection time;
2. TTFT (``--lengths``, default 32k / 64k / 128k; CUDA events after warm-up, median of ``--repeats``):
   stock transformers' prefill, SlimInfer (``--preset``, the paper's schedule), flexprefill alone,
   minference alone (every layer), SlimInfer + flexprefill at each fixed density on the layers that see
   the whole prompt (at the middle density also with ``prefill.compile``), and the two shipped presets
   (SlimInfer + each method's own rule), each with its speedup over stock and the density it computed;
3. a plot of TTFT against density (matplotlib, if importable).

Random bf16 weights with the real shape (speed only): their attention is nearly uniform, so the
methods' own budget rules keep most blocks here; the fixed-density rows show what a density buys.
Default settings take about 6 minutes on an H200 (``--budget-s`` skips what would run past it).

    python3 benchmarks/gpu/sparse_bench.py --out /tmp/sparse            # on the GPU
    python3 benchmarks/gpu/sparse_bench.py --shape tiny-llama --device cpu --quick --min-tokens 256 \\
        pruning.schedule.layers=[1,2] pruning.schedule.budgets=[512,256] --out /tmp/sparse   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.grid import prompt_ids
from sliminfer.bench.measure import Meter, all_ok, free_memory, ratio
from sliminfer.bench.run import environment
from sliminfer.bench.shapes import RANDOM_LABEL, build_random_model, shape_config
from sliminfer.bench.stock import StockRunner
from sliminfer.core.config import SlimConfig
from sliminfer.core.loading import resolve_device, resolve_dtype
from sliminfer.strategies.sparse_attention.blocks import BlockSelection
from sliminfer.strategies.sparse_attention.kernel import (
    FLEX_KERNEL_OPTIONS,
    block_sparse_attention,
    flex_block_mask,
    flex_block_sparse_attention,
    flex_kernel_options,
    masked_reference_attention,
)
from sliminfer.strategies.sparse_attention.strategy import (
    FlexPrefillAttention,
    FlexPrefillConfig,
    MInferenceAttention,
    MInferenceConfig,
)


class Budget:
    """A soft time limit: once spent, later measurements are recorded as skipped instead of run."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()

    def run(self, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``measure()`` (a Meter measurement), or a skipped record once the budget is spent."""
        if time.perf_counter() - self.start > self.seconds:
            return {"status": "skipped", "error": f"past the time budget of {self.seconds:.0f} s"}
        return measure()


def ms(m: dict[str, Any] | None) -> float | None:
    return m["median_s"] * 1e3 if m is not None and all_ok(m) else None


def tflops(flops: float, m: dict[str, Any]) -> float | None:
    return flops / m["median_s"] / 1e12 if all_ok(m) else None


# 0. the CUDA path is right --------------------------------------------------------------------------------
def check_flex_path(hf: Any, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """FlexAttention over a random 10 % selection against the dense masked reference, at a length with a
    partial last block and the shape's heads: the max abs difference (bf16: about 1e-2 is rounding)."""
    if device.type != "cuda":
        return {"status": "not run (no CUDA: the CPU path is the reference itself)"}
    heads, kv_heads = int(hf.num_attention_heads), int(hf.num_key_value_heads)
    d = int(getattr(hf, "head_dim", None) or hf.hidden_size // heads)
    n = 4099
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, n, d, device=device, dtype=dtype, generator=gen)
    k, v = (torch.randn(1, kv_heads, n, d, device=device, dtype=dtype, generator=gen) for _ in range(2))
    blocks = -(-n // 128)
    keep = torch.rand(1, heads, blocks, blocks, device=device, generator=gen) < 0.1
    selection = BlockSelection.from_grid(keep, 128, n)
    flex = flex_block_sparse_attention(q, k, v, selection, d**-0.5)
    reference = masked_reference_attention(q, k, v, selection, d**-0.5)
    gap = float((flex.float() - reference.float()).abs().max())
    return {"status": "ok" if gap < 5e-2 else "MISMATCH", "max_abs_diff": gap, "tokens": n,
            "density": selection.density()}


# 1. the kernel alone -------------------------------------------------------------------------------------
def dense_sdpa(meter: Meter, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> dict[str, Any]:
    """Causal SDPA with the KV heads repeated beforehand (untimed), torch's fastest dense path."""
    group = q.shape[1] // k.shape[1]
    k_all, v_all = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return meter.measure(lambda: F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True, scale=scale))


#: FlexAttention kernel options tried at the sweep density, beside the shipped ones (flex_kernel_options):
#: torch's own defaults, the shipped options without Hopper's TMA loads, and tile shapes other than the
#: autotuned default (each compiles anew; on 2026-12-07 on an H100 TMA was the fastest of these, and is now
#: shipped on Hopper GPUs for contiguous inputs, such as this kernel row's)
OPTION_SWEEP: tuple[dict[str, Any], ...] = (
    {},
    dict(FLEX_KERNEL_OPTIONS),  # without Hopper's TMA
    {**FLEX_KERNEL_OPTIONS, "BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
)


def option_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selection: BlockSelection, block_mask: Any,
                scale: float, flops: float, meter: Meter, budget: Budget, log: Callable[[str], None]
                ) -> list[dict[str, Any]]:
    """The kernel at one selection (``block_mask``: its BlockMask) under each of :data:`OPTION_SWEEP`: ms,
    TFLOP/s and the largest difference from the shipped options' output (a set that fails to compile is
    recorded as failed)."""
    shipped = flex_block_sparse_attention(q, k, v, selection, scale, block_mask=block_mask)
    rows = []
    for options in OPTION_SWEEP:
        log(f"    kernel options {options}")
        try:
            gap = float((flex_block_sparse_attention(q, k, v, selection, scale, block_mask, options).float()
                         - shipped.float()).abs().max())
        except Exception as error:  # an option set this torch or GPU rejects: recorded, the sweep goes on
            rows.append({"options": options, "status": "failed", "error": f"{type(error).__name__}: {error}"[:500]})
            continue
        m = budget.run(lambda o=options: meter.measure(
            lambda: flex_block_sparse_attention(q, k, v, selection, scale, block_mask, o)))
        rows.append({"options": options, **m, "ms": ms(m), "tflops": tflops(flops, m),
                     "max_abs_diff_vs_shipped": gap})
    return rows


def layout_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selection: BlockSelection, block_mask: Any,
                scale: float, flops: float, dense_flops: float, meter: Meter, budget: Budget,
                log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The shipped kernel on q/k/v laid out as the eager prefill hands them over (transposed views of
    ``[b, n, heads, d]`` projections: strided, so no TMA loads), against contiguous copies made inside the
    timed call (so TMA on Hopper): whether copying q/k/v would pay for itself inside an eager prefill. (The
    compiled prefill, ``prefill.compile``, gives them contiguous at no extra cost: the kernel rows' layout.)
    Also dense SDPA on that strided query (its KV heads repeated, as transformers' SDPA path does): the
    like-for-like baseline of the strided row."""
    strided = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]

    def copied() -> torch.Tensor:
        return flex_block_sparse_attention(*(t.contiguous() for t in strided), selection, scale, block_mask)

    def as_given() -> torch.Tensor:
        return flex_block_sparse_attention(*strided, selection, scale, block_mask)

    rows = []
    block = selection.block_size
    for label, run, options in (("strided, as the eager prefill gives them", as_given,
                                 flex_kernel_options(*strided, block)),
                                ("contiguous copy + its options", copied, flex_kernel_options(q, k, v, block))):
        log(f"    layout: {label}")
        m = budget.run(lambda r=run: meter.measure(r))
        rows.append({"layout": label, "options": options, **m, "ms": ms(m), "tflops": tflops(flops, m)})
    log("    layout: dense SDPA on the strided query (the stock model's call)")
    dense = budget.run(lambda: dense_sdpa(meter, *strided, scale))
    rows.append({"layout": "dense SDPA, strided query as the stock model gives it (KV heads repeated)", **dense,
                 "ms": ms(dense), "tflops": tflops(dense_flops, dense)})
    return rows


def kernel_rows(n: int, hf: Any, device: torch.device, dtype: torch.dtype, densities: list[float],
                meter: Meter, budget: Budget, log: Callable[[str], None], sweep_density: float | None
                ) -> dict[str, Any]:
    heads, kv_heads = int(hf.num_attention_heads), int(hf.num_key_value_heads)
    d = int(getattr(hf, "head_dim", None) or hf.hidden_size // heads)
    gen = torch.Generator(device=device).manual_seed(n)
    q = torch.randn(1, heads, n, d, device=device, dtype=dtype, generator=gen)
    k, v = (torch.randn(1, kv_heads, n, d, device=device, dtype=dtype, generator=gen) for _ in range(2))
    scale = d**-0.5
    dense_flops = 2.0 * heads * d * n * n  # QK^T and PV over the causal half
    log(f"  kernel {n}: dense SDPA")
    dense = budget.run(lambda: dense_sdpa(meter, q, k, v, scale))
    row: dict[str, Any] = {"tokens": n, "dense": {**dense, "ms": ms(dense), "tflops": tflops(dense_flops, dense)}}
    cuda = device.type == "cuda"
    for name, strategy in (("flexprefill", FlexPrefillAttention(FlexPrefillConfig())),
                           ("minference", MInferenceAttention(MInferenceConfig()))):
        log(f"  kernel {n}: {name} selection (its own rule)")
        select = budget.run(lambda s=strategy: meter.measure(lambda: s.select(q, k, scale)))
        row[f"{name}_select"] = {**select, "ms": ms(select)}
    row["sparse"] = []
    shipped_options = flex_kernel_options(q, k, v, FlexPrefillConfig().block_size) if cuda else None
    for density in densities:
        strategy = FlexPrefillAttention(FlexPrefillConfig(density=density))
        log(f"  kernel {n}: flexprefill top blocks at {density:.0%}")
        select = budget.run(lambda s=strategy: meter.measure(lambda: s.select(q, k, scale)))
        selection = strategy.select(q, k, scale)
        blocks = int(selection.counts.sum())
        flops = 4.0 * d * selection.block_size**2 * blocks  # every computed block as a full tile
        mask = budget.run(lambda s=selection: meter.measure(lambda: flex_block_mask(s))) if cuda else None
        if cuda:
            block_mask = flex_block_mask(selection)
            kernel = budget.run(lambda s=selection, bm=block_mask: meter.measure(
                lambda: flex_block_sparse_attention(q, k, v, s, scale, block_mask=bm)))
        else:  # the dense masked reference: the same pairs, no speed to expect
            kernel = budget.run(lambda s=selection: meter.measure(lambda: block_sparse_attention(q, k, v, s, scale)))
        total = sum(x for x in (ms(select), ms(mask), ms(kernel)) if x is not None)
        if cuda and density == sweep_density:
            row["kernel_options"] = {"density": density, "shipped": shipped_options, "sweep": option_rows(
                q, k, v, selection, block_mask, scale, flops, meter, budget, log), "layout": layout_rows(
                q, k, v, selection, block_mask, scale, flops, dense_flops, meter, budget, log)}
        row["sparse"].append({
            "density": density, "measured_density": selection.density(), "blocks": blocks,
            "kernel": "flex_attention" if cuda else "masked reference (CPU)",
            "kernel_options": shipped_options,
            "select_ms": ms(select), "mask_ms": ms(mask), "kernel_ms": ms(kernel),
            "kernel_tflops": tflops(flops, kernel), "kernel_speedup": ratio(dense, kernel),
            "with_select_and_mask_ms": total,
            "speedup_with_select_and_mask": ms(dense) / total if ms(dense) and total else None,
            "status": kernel["status"],
        })
        del selection
        free_memory(device)
    return row


# 2. TTFT ---------------------------------------------------------------------------------------------------
def ttft_configs(preset: SlimConfig, densities: list[float], min_tokens: int | None) -> dict[str, SlimConfig]:
    """Every timed pipeline config by label, most important first (the budget cuts from the end)."""
    base = preset.model_dump()
    floor = {} if min_tokens is None else {"min_tokens": min_tokens}
    unpruned = {key: value for key, value in base.items() if key != "pruning"}

    def with_attention(config: dict[str, Any], attention: dict[str, Any]) -> SlimConfig:
        return load_config({**config, "attention": {**attention, **floor}})

    configs = {"sliminfer": preset}
    headline = densities[len(densities) // 2]
    configs[f"sliminfer+flexprefill@{headline:.0%}"] = with_attention(
        base, {"name": "flexprefill", "density": headline})
    configs[f"sliminfer+flexprefill@{headline:.0%}+compile"] = with_attention(
        {**base, "prefill": {**base["prefill"], "compile": True}}, {"name": "flexprefill", "density": headline})
    configs["flexprefill"] = with_attention(unpruned, {"name": "flexprefill"})
    configs["minference"] = with_attention(unpruned, {"name": "minference"})
    for density in densities:
        configs.setdefault(f"sliminfer+flexprefill@{density:.0%}",
                           with_attention(base, {"name": "flexprefill", "density": density}))
    configs["sliminfer+flexprefill"] = with_attention(base, {"name": "flexprefill"})
    configs["sliminfer+minference"] = with_attention(base, {"name": "minference"})
    return configs


def sparse_density(pipe: SlimPipeline) -> float | None:
    """The mean density of the strategy's layers in the latest prefill (None without a strategy)."""
    strategy = pipe.forward.attention
    if strategy is None or not getattr(strategy, "densities", None):
        return None
    return float(torch.stack([d.float().mean() for d in strategy.densities.values()]).mean())


def ttft_rows(model: Any, configs: dict[str, SlimConfig], lengths: list[int], meter: Meter, budget: Budget,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    stock = StockRunner(model, meter, log)
    vocab = int(model.config.vocab_size)
    rows = []
    for n in lengths:
        ids = prompt_ids(n, vocab, meter.device)
        log(f"  {n} tokens: stock prefill")
        row: dict[str, Any] = {"tokens": n, "stock": budget.run(lambda ids=ids: stock.prefill(ids, "stock"))}
        for label, config in configs.items():
            log(f"  {n} tokens: {label} prefill")
            pipe = SlimPipeline(model, None, config)
            m = budget.run(lambda p=pipe, ids=ids: meter.measure(lambda: p.prefill(ids),
                                                                 lambda r: {"tokens_per_layer": r.tokens_per_layer}))
            m["sparse_density"] = sparse_density(pipe)
            m["speedup_vs_stock"] = ratio(row["stock"], m)
            row[label] = m
            del pipe
            free_memory(meter.device)
        rows.append(row)
    return rows


# 3. report -------------------------------------------------------------------------------------------------
def plot(rows: list[dict[str, Any]], densities: list[float], path: Path, log: Callable[[str], None]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        fixed = [row.get(f"sliminfer+flexprefill@{d:.0%}", {}) for d in densities]
        points = [(1.0, ms(row.get("sliminfer")))] + [(m.get("sparse_density"), ms(m)) for m in fixed]
        points = sorted((x, y) for x, y in points if x is not None and y is not None)
        if points:
            ax.plot([x * 100 for x, _ in points], [y for _, y in points], marker="o", label=f"{row['tokens']} tokens")
        if points and ms(row.get("stock")):
            ax.axhline(ms(row["stock"]), linestyle=":", linewidth=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("measured density of the sparse layers\n(% of causal blocks; 100: SlimInfer alone, dense)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("SlimInfer + FlexPrefill top blocks (dotted: stock)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"plot: {path}")


def table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    lines = ["| tokens | stock ms | " + " | ".join(f"{label} ms (x, density)" for label in labels) + " |",
             "|---" * (len(labels) + 2) + "|"]
    for row in rows:
        cells = []
        for label in labels:
            m = row.get(label, {})
            speed, dens = m.get("speedup_vs_stock"), m.get("sparse_density")
            cells.append("-" if ms(m) is None else f"{ms(m):.0f} ({speed:.2f}x" + (
                f", {dens:.0%})" if dens is not None else ")"))
        stock = ms(row["stock"])
        lines.append(f"| {row['tokens']} | {'-' if stock is None else f'{stock:.0f}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log(text: str) -> None:
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for sparse_bench.json and the plot")
    parser.add_argument("--shape", default="llama-3.1-8b", help="built-in shape (sliminfer.bench.shapes)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--preset", default="llama-3.1-8b", help="SlimInfer config (preset or YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the SlimInfer config")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 65536, 131072])
    parser.add_argument("--kernel-lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--sweep-density", type=float, default=0.1,
                        help="density at which each kernel length also times OPTION_SWEEP's kernel options")
    parser.add_argument("--min-tokens", type=int, help="the sparse strategies' min_tokens (default: theirs, 4096)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=330.0, help="skip measurements once this many s passed")
    parser.add_argument("--quick", action="store_true", help="lengths 1024 and 2048, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.kernel_lengths, args.repeats = [1024, 2048], [2048], 1
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    budget, meter = Budget(args.budget_s), Meter(device, args.warmup, args.repeats)
    # every kernel option set and length compiles flex_attention anew: more than dynamo's default 8 entries
    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
    preset = load_config(args.preset, args.overrides)
    hf = shape_config(args.shape)
    record: dict[str, Any] = {"environment": environment(device), "shape": args.shape, "label": RANDOM_LABEL,
                              "dtype": str(dtype).removeprefix("torch."), "preset": args.preset,
                              "overrides": args.overrides, "repeats": args.repeats, "warmup": args.warmup}
    log(f"sparse bench: {args.shape} ({RANDOM_LABEL}) on {record['environment']['device']}")
    with torch.inference_mode():
        record["flex_check"] = check_flex_path(hf, device, dtype)
        log(f"flex_attention against the reference: {record['flex_check']}")
        record["kernel"] = [kernel_rows(n, hf, device, dtype, args.densities, meter, budget, log, args.sweep_density)
                            for n in args.kernel_lengths]
    model = build_random_model(args.shape, dtype, device)
    configs = ttft_configs(preset, args.densities, args.min_tokens)
    record["configs"] = {label: config.model_dump() for label, config in configs.items()}
    record["ttft"] = ttft_rows(model, configs, args.lengths, meter, budget, log)
    record["elapsed_s"] = time.perf_counter() - budget.start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sparse_bench.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    plot(record["ttft"], args.densities, args.out / "sparse_ttft_vs_density.png", log)
    for row in record["kernel"]:
        log(f"kernel {row['tokens']}: dense {row['dense']['ms']} ms ({row['dense']['tflops']} TFLOP/s); "
            f"selection ms: flexprefill {row['flexprefill_select']['ms']}, minference {row['minference_select']['ms']}")
        for s in row["sparse"]:
            log(f"  {s['density']:.0%}: kernel {s['kernel_ms']} ms ({s['kernel_tflops']} TFLOP/s, "
                f"{s['kernel_speedup']}x), select {s['select_ms']} ms, mask {s['mask_ms']} ms, "
                f"all {s['with_select_and_mask_ms']:.2f} ms ({s['speedup_with_select_and_mask']}x)")
        for o in row.get("kernel_options", {}).get("sweep", []):
            share = o["tflops"] / row["dense"]["tflops"] if o.get("tflops") and row["dense"]["tflops"] else None
            log(f"  options {o['options']}: {o.get('ms')} ms, {o.get('tflops')} TFLOP/s "
                f"({'-' if share is None else f'{share:.1%}'} of dense), diff {o.get('max_abs_diff_vs_shipped')}, "
                f"{o.get('status')}")
        for o in row.get("kernel_options", {}).get("layout", []):
            log(f"  layout {o['layout']} {o.get('options', '')}: {o.get('ms')} ms, {o.get('tflops')} TFLOP/s, {o.get('status')}")
    log(table(record["ttft"], list(configs)))
    log(f"elapsed {record['elapsed_s']:.0f} s; wrote {args.out / 'sparse_bench.json'}")


if __name__ == "__main__":
    main()
