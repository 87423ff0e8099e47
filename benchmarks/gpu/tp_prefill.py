"""Tensor-parallel pruned prefill: TTFT of sliminfer vs stock transformers, and kept positions / logits to
compare tp=1 with tp=2.  Launch with torchrun (one process per GPU; works on the CPU with gloo too):

  torchrun --nproc-per-node 2 benchmarks/gpu/tp_prefill.py --shape llama-3.1-8b --checkpoint /tmp/l8b \
      --tokens 32768 --save /tmp/tp2.pt
  python benchmarks/gpu/tp_prefill.py --shape llama-3.1-8b --checkpoint /tmp/l8b --tokens 32768 --save /tmp/tp1.pt
  python benchmarks/gpu/tp_prefill.py --compare /tmp/tp1.pt /tmp/tp2.pt

``bash benchmarks/gpu/tp_runs.sh`` runs the whole set on a 2-GPU machine (NVLink multicast off).

``--checkpoint DIR``: random weights saved once to DIR (made by rank 0 when missing), so tp=1 and tp=2 load the
same weights. Without it, every rank initialises its own shards at random (speed only: for shapes too big to save,
e.g. ``--shape llama-70b``). The schedule is the paper's Llama-3.1-8B one (layers 9/19/29 of 32) scaled to the
model's depth.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
import torch.distributed as dist

from sliminfer import SlimPipeline
from sliminfer.bench.shapes import SHAPES, shape_config

EXTRA = {"llama-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64)}


def config_of(shape: str):
    if shape in EXTRA:
        cfg = shape_config("llama-3.1-8b")
        for k, v in EXTRA[shape].items():
            setattr(cfg, k, v)
        return cfg
    return shape_config(shape)


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def compare(one: str, two: str) -> None:
    """Kept positions and last-token logits of two ``--save`` files (tp=1 vs tp=2)."""
    a, b = torch.load(one), torch.load(two)
    same = [torch.equal(x, y) for x, y in zip(a["kept"], b["kept"])]
    shared = [torch.isin(x, y).float().mean().item() for x, y in zip(a["kept"], b["kept"])]
    diff = (a["logits"] - b["logits"]).abs()
    print(f"compare {one} {two}: kept positions equal in {sum(same)}/{len(same)} layers (share of the same positions: "
          f"min {min(shared):.4f}, mean {sum(shared) / len(shared):.4f}); last-token logits max |diff| "
          f"{diff.max().item():.4g} (max |logit| {a['logits'].abs().max().item():.3g}); same argmax "
          f"{bool(a['logits'].argmax() == b['logits'].argmax())}", flush=True)
    if a.get("stock_logits") is not None and b.get("stock_logits") is not None:  # the same in stock transformers
        stock = (a["stock_logits"] - b["stock_logits"]).abs().max().item()
        print(f"stock transformers, same two runs: last-token logits max |diff| {stock:.4g}; same argmax "
              f"{bool(a['stock_logits'].argmax() == b['stock_logits'].argmax())}", flush=True)


def init_distributed() -> tuple[int, int, torch.device]:
    """(world size, rank, this rank's device) under torchrun (NCCL on GPUs, gloo on the CPU), or one process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    return world, rank, device


def load_model(cfg: Any, checkpoint: str | None, dtype: torch.dtype, device: torch.device, world: int,
               rank: int) -> torch.nn.Module:
    """The model, tensor-parallel over ``world`` ranks: from ``checkpoint`` (random weights saved there by rank 0
    when missing), or without one from random shards (every rank its own: speed only)."""
    from transformers import AutoModelForCausalLM
    from transformers.distributed import DistributedConfig

    dc = DistributedConfig(tp_size=world) if world > 1 else None
    if checkpoint:
        if rank == 0 and not os.path.exists(os.path.join(checkpoint, "config.json")):
            torch.manual_seed(0)
            with torch.device(device):
                m = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
            m.save_pretrained(checkpoint)
            del m
        if world > 1:
            dist.barrier()
        kw = {"distributed_config": dc} if dc else {"device_map": str(device)}
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, attn_implementation="sdpa", **kw)
    else:  # random shards, speed only
        cls = AutoModelForCausalLM._model_mapping[type(cfg)]
        with torch.device("meta"):
            model = cls._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
        if dc:
            dc, _, mesh = cls.prepare_distribute_model(dc)
            model = cls.maybe_distribute_model(model, dc, mesh)
        model = model.to_empty(device=device)
        torch.manual_seed(rank)
        with torch.no_grad():
            for name, param in model.named_parameters():
                local = param.to_local() if hasattr(param, "to_local") else param
                local.fill_(1.0) if "norm" in name else local.normal_(0, 0.02)
        model.model.rotary_emb = type(model.model.rotary_emb)(cfg).to(device)
    return model.eval()


def paper_config(cfg: Any, budgets: list[int]) -> dict[str, Any]:
    """The paper's Llama-3.1-8B schedule (after layers 9/19/29 of 32) scaled to the model's depth."""
    n_layers = cfg.num_hidden_layers
    layers = [i * n_layers // 32 for i in (9, 19, 29)]
    return {"pruning": {"scorer": {"name": "token_unit", "block_size": 64, "unit_size": 8, "window": 4},
                        "schedule": {"name": "fixed", "layers": layers, "budgets": list(budgets)}}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--compare", nargs=2, metavar=("TP1_FILE", "TP2_FILE"), help="compare two --save files and exit")
    p.add_argument("--shape", default="tiny-llama", choices=sorted(SHAPES) + sorted(EXTRA))
    p.add_argument("--checkpoint")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--save")
    p.add_argument("--budgets", type=int, nargs=3, default=[8192, 4096, 2048])
    p.add_argument("--no-stock", action="store_true", help="skip the stock transformers prefill")
    a = p.parse_args()
    if a.compare:
        compare(*a.compare)
        return
    world, rank, device = init_distributed()
    cfg = config_of(a.shape)
    model = load_model(cfg, a.checkpoint, getattr(torch, a.dtype), device, world, rank)
    slim = paper_config(cfg, a.budgets)
    layers = slim["pruning"]["schedule"]["layers"]
    pipe = SlimPipeline.from_pretrained(model, config=slim)
    ids = torch.randint(0, cfg.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(1)).to(device)
    times, result = [], None
    for _ in range(a.repeat):
        result = None
        t0 = sync(device)
        result = pipe.prefill(ids)
        times.append(sync(device) - t0)
    stock, stock_logits = [], None
    if not a.no_stock:
        with torch.inference_mode():
            for _ in range(a.repeat):
                t0 = sync(device)
                stock_logits = model(ids, logits_to_keep=1).logits[:, -1]
                stock.append(sync(device) - t0)
    if rank == 0:
        print(f"shape={a.shape} tp={world} tokens={a.tokens} layers={layers} slim_ttft_s={min(times):.4f} "
              f"stock_ttft_s={min(stock) if stock else float('nan'):.4f} kept={result.tokens_per_layer[-1]} "
              f"kv_bytes_per_rank={result.kv_bytes}", flush=True)
        if a.save:
            stock_saved = None if stock_logits is None else stock_logits.float().cpu()
            torch.save({"kept": [k.cpu() for k in result.kept_positions], "logits": result.logits.float().cpu(),
                        "stock_logits": stock_saved}, a.save)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
