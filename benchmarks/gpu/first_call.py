"""The first ``generate(fast=True)`` call of a new process: what compiling and capturing cost it.

Why: the static decode compiles (torch.compile) and captures a CUDA graph per shape; sliminfer keeps
inductor's caches under its cache folder (``$SLIMINFER_CACHE/compile``), so a second process on the same
machine should pay far less than the first. Run it twice with the same fresh ``SLIMINFER_CACHE``: the
first process is cold, the second finds the first one's cache (random bf16 weights, Llama-3.1-8B shape,
the paper's schedule, a 32k prompt, 128 new tokens; wall clock of the whole call, model building excluded):

    export SLIMINFER_CACHE=/tmp/fresh-cache
    python3 benchmarks/gpu/first_call.py cold; python3 benchmarks/gpu/first_call.py warm
    python3 benchmarks/gpu/first_call.py cold decode.autotune=true   # key=value overrides of the preset
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.shapes import build_random_model


def main(label: str, overrides: list[str], prompt: int = 32768, new_tokens: int = 128) -> dict[str, object]:
    device = torch.device("cuda")
    model = build_random_model("llama-3.1-8b", torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("llama-3.1-8b", overrides))
    ids = torch.randint(0, 128000, (1, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    first = pipe.generate(ids, max_new_tokens=new_tokens, fast=True)
    torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    again = pipe.generate(ids, max_new_tokens=new_tokens, fast=True)
    return {"label": label, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "cache": os.environ.get("SLIMINFER_CACHE"), "overrides": overrides, "prompt": prompt, "new_tokens": new_tokens,
            "first_call_s": first_s, "second_call_s": again.total_s, "tokens_equal": first.token_ids == again.token_ids}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])), flush=True)
