"""Fast decode with and without the decoder's own fused projection copies, against an older tree.

Why: the static decode used to fuse q/k/v and gate/up by turning the model's weights into views of
fused tensors (changing the user's model); it now keeps its own fused copies. This measures what that
costs (decode ms/token, TTFT, peak GPU memory) and checks the model's parameters are untouched.
Run in one device session (random bf16 weights, Llama-3.1-8B shape, paper schedule); the "base" row
of benchmarks/results/h200-2026-12-02/fuse_check.jsonl came from the older tree (which changed the model), run
with this script's version of that commit:
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/fuse_check.py fused
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/fuse_check.py unfused
"""

from __future__ import annotations

import json
import statistics
import sys

import torch

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.shapes import build_random_model
from sliminfer.decode.run import static_generate

GIB = 1 << 30


def main(mode: str, prompt: int = 32768, new_tokens: int = 128, repeats: int = 3) -> dict:
    device = torch.device("cuda")
    model = build_random_model("llama-3.1-8b", torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("llama-3.1-8b"))
    ids = torch.randint(0, 128000, (1, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    options = {} if mode == "base" else {"fuse": mode == "fused"}
    before = [(p.data_ptr(), p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in model.parameters()]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    first = static_generate(pipe, ids, new_tokens, options=options)  # compiles and captures
    runs = [static_generate(pipe, ids, new_tokens, options=options, decoder=first.decoder) for _ in range(repeats)]
    torch.cuda.synchronize()
    after = [(p.data_ptr(), p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in model.parameters()]
    result = {
        "mode": mode, "device": torch.cuda.get_device_name(), "prompt": prompt, "new_tokens": new_tokens,
        "first_call_s": first.total_s,
        "ttft_s": statistics.median(r.ttft_s for r in runs),
        "decode_ms_per_token": statistics.median(r.decode_s_per_token for r in runs) * 1e3,
        "peak_gib": torch.cuda.max_memory_allocated() / GIB, "weights_gib": weights / GIB,
        "model_storage_unchanged": before == after,
        "same_tokens_across_calls": all(r.token_ids == runs[0].token_ids for r in runs),
    }
    result["decode_gb_per_s"] = weights / (result["decode_ms_per_token"] * 1e-3) / 1e9  # weights only: a floor
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
