"""Layers spread over two GPUs by accelerate's device_map: the same kept positions, prefill logits and
greedy tokens as the same model on one GPU.

Llama-3.1-8B configuration, random bf16 weights (built in code), the paper's schedule (8k/4k/2k after
layers 9/19/29), a --tokens prompt, --new greedy tokens with the eager decode. The model is first run on
cuda:0, then dispatched with ``accelerate.dispatch_model`` (what ``from_pretrained(device_map=...)``
does): embeddings and layers 0-15 on cuda:0, layers 16-31, the final norm and the LM head on cuda:1.
Also checks that the fast decode and the offload manager refuse the spread model with a clear error.
Writes $OUT/device_map_check.json. On a 2-GPU machine:

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/device_map_check.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_bench import SCHEDULE, build_model  # noqa: E402

from sliminfer import ConfigError, InputError, SlimPipeline  # noqa: E402


def run(pipe: SlimPipeline, ids: torch.Tensor, new: int) -> dict[str, Any]:
    out = pipe.generate(ids, max_new_tokens=new)
    return {"tokens": out.token_ids, "kept": [k.cpu() for k in out.prefill.kept_positions],
            "logits": out.prefill.logits.float().cpu(), "ttft_s": out.ttft_s,
            "decode_s_per_token": out.decode_s_per_token}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    a = p.parse_args()
    from accelerate import dispatch_model

    model = build_model()
    model.generation_config.eos_token_id = None
    config = {"pruning": {"schedule": SCHEDULE}}
    ids = torch.randint(0, model.config.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(5))
    one_pipe = SlimPipeline.from_pretrained(model, config=config)
    run(one_pipe, ids.cuda(), 2)  # warm-up
    one = run(one_pipe, ids.cuda(), a.new)
    del one_pipe
    gc.collect()
    layers = model.config.num_hidden_layers
    split = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 1,
             **{f"model.layers.{i}": 0 if i < layers // 2 else 1 for i in range(layers)}}
    model = dispatch_model(model, device_map=split)
    two_pipe = SlimPipeline.from_pretrained(model, config=config)
    devices = sorted({str(d) for d in two_pipe.adapter.layer_devices or []})
    run(two_pipe, ids.cuda(0), 2)
    two = run(two_pipe, ids.cuda(0), a.new)
    refusals = {}
    try:
        two_pipe.generate(ids.cuda(0), max_new_tokens=4, fast=True)
        refusals["fast"] = "not refused"
    except InputError as exc:
        refusals["fast"] = str(exc)
    try:
        SlimPipeline.from_pretrained(model, config={**config, "cache": {"name": "offload"}})
        refusals["offload"] = "not refused"
    except ConfigError as exc:
        refusals["offload"] = str(exc)
    result = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": a.tokens, "new": a.new,
        "layer_devices": devices, "hf_device_map_devices": sorted({str(v) for v in model.hf_device_map.values()}),
        "kept_positions_equal": all(torch.equal(x, y) for x, y in zip(one["kept"], two["kept"])),
        "logits_max_abs_diff": (one["logits"] - two["logits"]).abs().max().item(),
        "tokens_equal": one["tokens"] == two["tokens"],
        "ttft_s": {"one_gpu": one["ttft_s"], "two_gpus": two["ttft_s"]},
        "decode_s_per_token": {"one_gpu": one["decode_s_per_token"], "two_gpus": two["decode_s_per_token"]},
        "refusals": refusals,
    }
    result["passed"] = (len(devices) == 2 and result["kept_positions_equal"] and result["tokens_equal"]
                        and result["logits_max_abs_diff"] == 0.0 and "not refused" not in refusals.values())
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "device_map_check.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
