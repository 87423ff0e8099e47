"""Why ``generate(fast=True)``'s TTFT with FlexPrefill is above ``prefill`` alone (+3.8 % / +4.7 %, H100).

Why: with the default pruning the two agree within 0.4 %; with FlexPrefill @10 % the fast path was 17 ms
slower at 32k. The fast path writes the prompt KV into the static decoder's buffers (room for the new
tokens, so the key/value views are not contiguous), and ``torch.compile(flex_attention)`` recompiles with
dynamic shapes/strides once a second layout or length comes. This times, in one process (Llama-3.1-8B shape,
random bf16 weights, ``llama-3.1-8b`` preset with the overrides given): prefill alone; the fast path's TTFT;
prefill alone again (after the fast path's layout has been seen); then a second prompt length and both again;
counts dynamo's compiles and says whether every call on the 32k prompt gave the same tokens. Prints one JSON
line. ``--static`` turns off dynamo's automatic dynamic shapes,
so FlexAttention compiles a kernel of its own for every new length or layout (the compiled prefill pieces stay
dynamic: they mark their token dimension themselves), to tell a dynamic kernel's cost from the layout's;
``--torch-divisible`` leaves FlexAttention's ``IS_DIVISIBLE`` to torch, as before sliminfer set it from the
real lengths (``flex_kernel_options``); ``--cache-views`` hands the attention the cache's views of k/v, as before
the prefill attended over the projections' own (``ModelAdapter.attention_block_with``).

    python3 benchmarks/gpu/ttft_gap.py attention.name=flexprefill attention.density=0.1 prefill.compile=true
"""

from __future__ import annotations

import json
import statistics
import sys

import torch
from torch._dynamo.utils import counters

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.measure import Meter
from sliminfer.bench.shapes import build_random_model


def timed_prefill(pipe: SlimPipeline, ids: torch.Tensor, repeats: int = 3) -> float:
    return Meter(ids.device, warmup=0, repeats=repeats).measure_or_raise(lambda: pipe.prefill(ids))["median_s"]


def fast_ttft(pipe: SlimPipeline, ids: torch.Tensor, tokens: set[tuple[int, ...]], repeats: int = 3) -> float:
    """Median TTFT of ``generate(fast=True)``; each call's tokens go into ``tokens`` (one entry if all agree)."""
    results = [pipe.generate(ids, max_new_tokens=16, fast=True) for _ in range(repeats)]
    tokens.update(tuple(r.token_ids) for r in results)
    return statistics.median(r.ttft_s for r in results)


def main(overrides: list[str]) -> dict[str, object]:
    static, torch_divisible, cache_views = (flag in overrides for flag in ("--static", "--torch-divisible",
                                                                          "--cache-views"))
    overrides = [o for o in overrides if not o.startswith("--")]
    torch._dynamo.config.automatic_dynamic_shapes = not static
    if torch_divisible:
        from sliminfer.strategies.sparse_attention import kernel

        ours = kernel.flex_kernel_options

        def without_divisible(*args: object) -> dict[str, object]:
            options = ours(*args)
            options.pop("IS_DIVISIBLE", None)
            return options

        kernel.flex_kernel_options = without_divisible
    if cache_views:
        from sliminfer.models.base import ModelAdapter

        decomposed = ModelAdapter._decomposed_block

        def with_cache_views(self: ModelAdapter, *args: object, **kwargs: object) -> torch.Tensor:
            return decomposed(self, *args, **{**kwargs, "own_kv": False})

        ModelAdapter._decomposed_block = with_cache_views
    device = torch.device("cuda")
    model = build_random_model("llama-3.1-8b", torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("llama-3.1-8b", overrides))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128000, (1, 32768), generator=gen).to(device)
    other = torch.randint(0, 128000, (1, 30000), generator=gen).to(device)
    rows: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "overrides": overrides,
                               "automatic_dynamic_shapes": not static, "torch_divisible": torch_divisible,
                               "cache_views": cache_views}

    def record(key: str, value: float) -> None:  # printed as it comes, so a cut-off run still says something
        rows[key] = value
        print(f"{key}: {value:.4f}", flush=True)

    pipe.prefill(ids)  # warm-up
    record("prefill_32k_first_s", timed_prefill(pipe, ids))
    seen: set[tuple[int, ...]] = {tuple(pipe.generate(ids, max_new_tokens=16, fast=True).token_ids)}  # warm-up
    record("fast_ttft_32k_s", fast_ttft(pipe, ids, seen))
    record("prefill_32k_after_fast_s", timed_prefill(pipe, ids))
    pipe.prefill(other)
    pipe.generate(other, max_new_tokens=16, fast=True)
    record("prefill_30000_s", timed_prefill(pipe, other))
    record("fast_ttft_30000_s", fast_ttft(pipe, other, set()))
    record("prefill_32k_last_s", timed_prefill(pipe, ids))
    record("fast_ttft_32k_last_s", fast_ttft(pipe, ids, seen))
    rows["same_tokens_in_every_32k_call"] = len(seen) == 1
    rows["dynamo"] = {k: dict(v) for k, v in counters.items() if k in ("stats", "recompiles")}
    return rows


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
