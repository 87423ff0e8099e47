"""The first ``generate(fast=True)`` call of a new process: what compiling and capturing cost it.

Why: the static decode compiles (torch.compile) and captures a CUDA graph per shape; sliminfer keeps
inductor's caches under its cache folder (``$SLIMINFER_CACHE/compile``), so a second process on the same
machine should pay far less than the first. Run it twice with the same fresh ``SLIMINFER_CACHE``: the
first process is cold, the second finds the first one's cache (random bf16 weights, Llama-3.1-8B shape,
the paper's schedule, a 32k prompt, 128 new tokens; wall clock of the whole call, model building excluded):

    export SLIMINFER_CACHE=/tmp/fresh-cache
    python3 benchmarks/gpu/first_call.py cold; python3 benchmarks/gpu/first_call.py warm
    python3 benchmarks/gpu/first_call.py cold decode.autotune=true   # key=value overrides of the preset

``--tune NAME=VALUE`` (repeatable) replaces one inductor option of the autotuned compile
(``sliminfer.decode.compile_cache.AUTOTUNE_OPTIONS``) for this process, to find which of them a second
process pays for: ``--tune coordinate_descent_tuning=0 --tune dynamic_scale_rblock=0``. Besides the wall
clock it prints the decoder's set-up of the first call, the decode ms/token of the second, and inductor's
counters of the first call (FX graph cache hits and misses, matmul autotunings, coordinate-descent timings:
on a warm cache, any of the last two means the process re-timed kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.shapes import build_random_model
from sliminfer.decode import compile_cache

#: inductor's counters worth printing (torch._dynamo.utils.counters["inductor"])
COUNTERS = ("fxgraph_cache_hit", "fxgraph_cache_miss", "select_algorithm_autotune", "coordesc_tuning_bench")


def parse_tune(items: list[str]) -> dict[str, bool | int]:
    """``NAME=VALUE`` pairs, VALUE an integer (0 and 1 read as booleans); NAME must be an inductor option."""
    from torch._inductor import config as inductor_config

    tune: dict[str, bool | int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not hasattr(inductor_config, name) or not value.lstrip("-").isdigit():
            raise SystemExit(f"--tune {item!r}: expected NAME=INTEGER with NAME an inductor config option")
        tune[name] = bool(int(value)) if value in ("0", "1") else int(value)
    return tune


def main(label: str, overrides: list[str], tune: dict[str, bool | int], prompt: int = 32768,
         new_tokens: int = 128) -> dict[str, object]:
    from torch._dynamo.utils import counters

    compile_cache.AUTOTUNE_OPTIONS.update(tune)
    device = torch.device("cuda")
    model = build_random_model("llama-3.1-8b", torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("llama-3.1-8b", overrides))
    ids = torch.randint(0, 128000, (1, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    counters.clear()
    torch.cuda.synchronize()
    start = time.perf_counter()
    first = pipe.generate(ids, max_new_tokens=new_tokens, fast=True)
    torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    seen = {name: counters["inductor"][name] for name in COUNTERS}
    again = pipe.generate(ids, max_new_tokens=new_tokens, fast=True)
    return {"label": label, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "cache": os.environ.get("SLIMINFER_CACHE"), "overrides": overrides,
            "autotune_options": compile_cache.AUTOTUNE_OPTIONS, "prompt": prompt, "new_tokens": new_tokens,
            "first_call_s": first_s, "first_setup_s": first.setup_s, "second_call_s": again.total_s,
            "second_ttft_s": again.ttft_s, "second_decode_ms_per_token": again.decode_s_per_token * 1e3,
            "inductor_counters": seen, "tokens_equal": first.token_ids == again.token_ids}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("label", help="a name for this process in the output (cold, warm, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the llama-3.1-8b preset")
    parser.add_argument("--tune", action="append", default=[], metavar="NAME=VALUE",
                        help="replace one inductor option of the autotuned compile (repeatable)")
    args = parser.parse_args()
    print(json.dumps(main(args.label, args.overrides, parse_tune(args.tune))), flush=True)
