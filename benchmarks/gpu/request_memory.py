"""Peak GPU memory of a whole request (prefill and static decode), GPU-resident cache vs offload.

Why: the offload manager exists to lower GPU memory, so its peak over the whole request (not only the
decode) must sit below the GPU-resident cache's. For each prompt length and cache this prints and
writes (``--out``/request_memory.json) the peak of the prefill alone, the peak of a whole
``static_generate`` request (prefill + ``--new`` tokens, the second call, after a warm-up call that
compiles), its TTFT, set-up and decode ms/token. Offload runs with its default ``prefill_chunk`` (the
MLP in 8192-token chunks) and with ``prefill_chunk: null`` (the prefill alone), which shows what the
chunking buys, and with ``gamma: 0`` (no swaps after the first selection), which separates the
cost of the transfers from the rest. Random bf16 weights, Llama-3.1-8B shape, the paper's schedule, decode_budget 2048.

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/request_memory.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_bench import SCHEDULE, build_model, free, random_ids  # noqa: E402

from sliminfer import SlimPipeline  # noqa: E402
from sliminfer.decode.run import static_generate  # noqa: E402

GIB = 1 << 30
OFFLOAD = {"name": "offload", "decode_budget": 2048}
VARIANTS: dict[str, dict[str, Any]] = {  # config sections beside the paper's pruning
    "gpu_resident": {},
    "offload": {"cache": OFFLOAD},
    "offload_unchunked": {"cache": {**OFFLOAD, "prefill_chunk": None}},
    "offload_no_swaps": {"cache": {**OFFLOAD, "gamma": 0.0}},  # the first active sets stay
    "offload_fuse_all": {"cache": OFFLOAD, "decode": {"fuse": True}},  # q/k/v and gate/up copies
    "offload_unfused": {"cache": OFFLOAD, "decode": {"fuse": False}},  # no fused weight copies
    "offload_triton": {"cache": OFFLOAD, "decode": {"kernel": "triton"}},  # auto is split for offload, triton here
}


def peak_of(fn: Any) -> tuple[Any, float]:
    free()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() / GIB


def measure(pipe: SlimPipeline, ids: torch.Tensor, new: int, whole: bool) -> dict[str, Any]:
    prefill, prefill_peak = peak_of(lambda: pipe.prefill(ids))
    row: dict[str, Any] = {"prefill_peak_gib": prefill_peak, "prefill_ms": prefill.ttft_s * 1e3,
                           "kv_gpu_gib": sum(prefill.kv_bytes_per_layer) / GIB}
    del prefill
    if whole:
        static_generate(pipe, ids, new, stop_at_eos=False)  # warm-up: compile and capture at these shapes
        out, peak = peak_of(lambda: static_generate(pipe, ids, new, stop_at_eos=False))
        row.update(request_peak_gib=peak, ttft_ms=out.ttft_s * 1e3, setup_ms=out.setup_s * 1e3,
                   decode_ms_per_token=out.decode_s_per_token * 1e3, tokens=out.token_ids[:8])
        d = out.decoder
        if d is not None:
            row.update(graph=d.graph is not None, graph_error=d.graph_error, compiled=d.compiled,
                       static_kv_gib=d.kv_bytes() / GIB, fused_copies=d.fused is not None, decoder_stats=d.stats())
        del out
    free()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="32768,130944")  # 128k less the new tokens: the model's positions
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--variants", default="", help="comma-separated names of VARIANTS (default: all)")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = parser.parse_args()
    model = build_model()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "weights_gib": weights, "new": args.new,
                              "rows": []}
    for n in (int(x) for x in args.lengths.split(",")):
        ids = random_ids(n, model.config.vocab_size, seed=n)
        for name, sections in VARIANTS.items():
            if args.variants and name not in args.variants.split(","):
                continue
            config: dict[str, Any] = {"pruning": {"schedule": SCHEDULE}, **sections}
            pipe = SlimPipeline.from_pretrained(model, config=config)
            row = {"prompt": n, "cache": name, **measure(pipe, ids, args.new, whole=name != "offload_unchunked")}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "request_memory.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
