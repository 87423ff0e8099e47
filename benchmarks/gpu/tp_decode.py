"""The static fast decode under tensor parallelism on GPUs (CUDA graph, torch.compile), which the library
refuses until it is verified (``StaticDecoder._check_tensor_parallel``); this script lifts that check in a
subclass and checks it.

1. Correctness, tiny Llama saved once (fp32, same weights on every rank): the greedy tokens of the static
   decode (graph; graph + compile) equal the eager decode's (``SlimPipeline.generate``), both tp=WORLD.
2. Speed, Llama-3.1-8B shape, random bf16 shards (speed only), --tokens prompt: decode ms/token of the
   eager decode, the graph and the graph + compile (CUDA events around the whole decode).

    torchrun --nproc-per-node 2 benchmarks/gpu/tp_decode.py      (NCCL_NVLS_ENABLE=0 on shared hosts)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tp_prefill import config_of, init_distributed, load_model, paper_config  # noqa: E402

from sliminfer import SlimPipeline  # noqa: E402
from sliminfer.core.config import DecodeSection  # noqa: E402
from sliminfer.decode.static import StaticDecoder  # noqa: E402


class CheckedDecoder(StaticDecoder):
    """The static decoder with the tensor-parallel refusal lifted: what this script verifies."""

    @staticmethod
    def _check_tensor_parallel(adapter: Any, graph: bool, compile: bool) -> None:
        return None


def static_decode(pipe: SlimPipeline, ids: torch.Tensor, new: int, **options: Any) -> dict[str, Any]:
    with torch.inference_mode():
        prefill = pipe.forward.prefill(ids, pipe.new_cache(0))
        first = prefill.logits.argmax(dim=-1, keepdim=True)
    decoder = CheckedDecoder.for_prefill(pipe.adapter, prefill, new, DecodeSection(mode="static", **options))
    decoder.load(prefill, first)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    decoder.decode(new - 1)
    end.record()
    end.synchronize()
    return {"tokens": decoder.tokens(new), "ms_per_token": start.elapsed_time(end) / (new - 1),
            "graph": decoder.graph is not None, "graph_error": decoder.graph_error, "compiled": decoder.compiled}


def variants(pipe: SlimPipeline, ids: torch.Tensor, new: int) -> dict[str, Any]:
    eager = pipe.generate(ids, max_new_tokens=new)
    out: dict[str, Any] = {"eager": {"tokens": eager.token_ids, "ms_per_token": eager.decode_s_per_token * 1e3}}
    for name, options in (("graph", {"kernel": "split", "compile": False}), ("graph_compiled", {})):
        try:
            static_decode(pipe, ids, new, **options)  # warm-up: capture (and compilation) at these shapes
            out[name] = static_decode(pipe, ids, new, **options)
        except Exception as exc:  # noqa: BLE001 - report and go on
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        out[name]["tokens_equal_eager"] = out[name].get("tokens") == eager.token_ids
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--checkpoint", default="/tmp/tiny_tp")
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    a = p.parse_args()
    world, rank, device = init_distributed()
    result: dict[str, Any] = {"world": world, "device": torch.cuda.get_device_name(device)}

    tiny = config_of("tiny-llama")
    model = load_model(tiny, a.checkpoint, torch.float32, device, world, rank)
    model.generation_config.eos_token_id = None
    pipe = SlimPipeline.from_pretrained(model, config=paper_config(tiny, [1024, 512, 256]))
    ids = torch.randint(0, tiny.vocab_size, (1, 2048), generator=torch.Generator().manual_seed(1)).to(device)
    result["tiny_fp32"] = variants(pipe, ids, 48)
    if rank == 0:
        print("tiny fp32:", json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "tokens"}
                                        for k, v in result["tiny_fp32"].items()}), flush=True)
    del pipe, model

    big = config_of("llama-3.1-8b")
    model = load_model(big, None, torch.bfloat16, device, world, rank)
    model.generation_config.eos_token_id = None
    pipe = SlimPipeline.from_pretrained(model, config=paper_config(big, [8192, 4096, 2048]))
    ids = torch.randint(0, big.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(1)).to(device)
    result["llama8b_bf16"] = variants(pipe, ids, a.new)
    if rank == 0:
        print("8B bf16:", json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "tokens"}
                                      for k, v in result["llama8b_bf16"].items()}), flush=True)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "tp_decode.json").write_text(json.dumps(result, indent=1))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
