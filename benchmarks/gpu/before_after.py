"""TTFT (the pruned prefill) at 32k and 128k and fast-decode ms/token at 32k, for one source tree.

Why: a restructuring must keep every measured speed. Run it once per tree in one device session,
each in its own process, and compare (random bf16 weights, Llama-3.1-8B shape, the paper schedule,
SDPA prefill; CUDA events after warm-up, medians):
    PYTHONPATH=/tmp/site:.base python3 benchmarks/gpu/before_after.py before >> before_after.jsonl
    PYTHONPATH=/tmp/site:$PWD  python3 benchmarks/gpu/before_after.py after  >> before_after.jsonl
It runs on trees from before and after the ``sliminfer.decode`` package (it picks the API it finds).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch

import sliminfer
from sliminfer import SlimPipeline, load_config
from sliminfer.bench.shapes import build_random_model


def fast_generate_api() -> Callable[..., Any]:
    """``fast(pipe, ids, n, decoder)``: greedy prefill + static decode with this tree's defaults."""
    try:
        from sliminfer.decode.run import static_generate
    except ImportError:  # the tree before sliminfer.decode
        from sliminfer.core.graph_decode import fast_generate  # type: ignore[import-not-found]

        return lambda pipe, ids, n, decoder=None: fast_generate(pipe, ids, n, decoder=decoder, stop_at_eos=False)
    return lambda pipe, ids, n, decoder=None: static_generate(pipe, ids, n, decoder=decoder, stop_at_eos=False)


def prefill_ms(pipe: SlimPipeline, ids: torch.Tensor, repeats: int) -> list[float]:
    """Wall time of ``pipe.prefill`` in ms, CUDA events, after one warm-up call."""
    pipe.prefill(ids)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = pipe.prefill(ids)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
        del result
    return times


def main(label: str, repeats: int = 5, new_tokens: int = 128) -> dict[str, Any]:
    device = torch.device("cuda")
    model = build_random_model("llama-3.1-8b", torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("llama-3.1-8b"))
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {"label": label, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "sliminfer": sliminfer.__file__}
    for n in (32768, 131072):
        ids = torch.randint(0, 128000, (1, n), generator=gen).to(device)
        times = prefill_ms(pipe, ids, repeats)
        out[f"prefill_ms_{n}"] = statistics.median(times)
        out[f"prefill_ms_{n}_all"] = times
        torch.cuda.empty_cache()
    fast = fast_generate_api()
    ids = torch.randint(0, 128000, (1, 32768), generator=gen).to(device)
    first = fast(pipe, ids, new_tokens)  # compiles and captures
    runs = [fast(pipe, ids, new_tokens, first.decoder) for _ in range(3)]
    out["fast_first_call_s"] = first.total_s
    out["fast_decode_ms_per_token_32768"] = statistics.median(r.decode_s_per_token for r in runs) * 1e3
    out["fast_ttft_ms_32768"] = statistics.median(r.ttft_s for r in runs) * 1e3
    out["fast_tokens"] = runs[0].token_ids[:16]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
