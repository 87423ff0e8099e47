"""The static decode's attention kernels side by side: correctness, then time per layer and per step.

Why: the decode attention reads each layer's whole KV once per token; how near the memory bandwidth a
kernel reads it decides how far the decode step is from its floor. This checks every kernel
(``sdpa``, ``split``, ``flex``, ``triton``) against a float32 masked reference on the buffers of the
Llama-3.1-8B shape with the paper's schedule at ``--prompt`` tokens (32 query / 8 KV heads of 128,
bf16; one buffer capacity per layer group), times each the way the decoder runs it (``split`` and
``flex`` compiled, ``triton`` as is; each call replayed from a CUDA graph of ``--calls`` calls, CUDA
events, median of ``--repeats``), and prints µs per layer, GB/s of K + V read and the attention's
share of a decode step (all 32 layers). Then, on a tiny float32 Llama on the GPU, the static decode
with each kernel must give the eager decode's greedy tokens (graph replay, compiled and not).

    python3 benchmarks/gpu/decode_kernels.py --out $OUT        # writes decode_kernels.json
    TRITON_INTERPRET=1 python benchmarks/gpu/decode_kernels.py --smoke --out /tmp/dk   # CPU smoke run (fp32)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sliminfer import SlimPipeline  # noqa: E402
from sliminfer.bench.measure import graph_seconds_per_call  # noqa: E402
from sliminfer.decode.kernels import CAPACITY_ALIGN, MASKED_KERNELS, sdpa_decode_attention  # noqa: E402
from sliminfer.decode.run import static_generate  # noqa: E402
from sliminfer.testing.tiny_models import tiny_model  # noqa: E402

Q_HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 8, 128, 32
SCHEDULE = ((9, 8192), (19, 4096), (29, 2048))  # the paper's: budget kept after layer
NEW_TOKENS = 256
KERNELS = ("sdpa", "split", "flex", "triton")
PRUNED = {"pruning": {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
                      "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]}}}


def layer_tokens(prompt: int) -> list[int]:
    tokens, current = [], prompt
    cuts = dict(SCHEDULE)
    for layer in range(LAYERS):
        tokens.append(current)
        if layer in cuts:
            current = min(current, cuts[layer])
    return tokens


def kernel_fn(name: str) -> Callable:
    """The kernel as the decoder runs it: ``split`` and ``flex`` inside a compiled step, the others as they are."""
    fn = MASKED_KERNELS[name]
    return torch.compile(fn, fullgraph=True, dynamic=False) if name in ("split", "flex") else fn


def kernel_table(prompt: int, calls: int, repeats: int, dev: torch.device, dtype: torch.dtype) -> dict:
    gen = torch.Generator(device=dev).manual_seed(0)
    tokens = layer_tokens(prompt)
    groups: dict[int, int] = {}
    for n in tokens:
        groups[n] = groups.get(n, 0) + 1
    fns = {name: kernel_fn(name) for name in KERNELS}
    rows, step_us, kv_step = [], {name: 0.0 for name in KERNELS}, 0
    scale = HEAD_DIM**-0.5
    for n, count in groups.items():
        cap = -(-(n + NEW_TOKENS - 1) // CAPACITY_ALIGN) * CAPACITY_ALIGN
        used = n + NEW_TOKENS // 2  # the middle of the generation
        q = torch.randn(1, Q_HEADS, 1, HEAD_DIM, device=dev, dtype=dtype, generator=gen)
        keys = torch.randn(1, KV_HEADS, cap, HEAD_DIM, device=dev, dtype=dtype, generator=gen)
        values = torch.randn(1, KV_HEADS, cap, HEAD_DIM, device=dev, dtype=dtype, generator=gen)
        bias = torch.full((1, 1, 1, cap), float("-inf"), device=dev, dtype=dtype)
        bias[..., :used] = 0.0
        ref = sdpa_decode_attention(q.float(), keys.float(), values.float(), bias.float(), scale).float()
        kv_bytes = 2 * KV_HEADS * cap * HEAD_DIM * keys.element_size()
        kv_step += kv_bytes * count
        for name, fn in fns.items():
            row = {"prompt_tokens_in_layer": n, "capacity": cap, "layers": count, "kernel": name}
            try:
                with torch.inference_mode():
                    got = fn(q, keys, values, bias, scale).float()
                    row["max_abs_err_vs_fp32"] = (got - ref).abs().max().item()
                    us = 1e6 * graph_seconds_per_call(lambda fn=fn: fn(q, keys, values, bias, scale), calls, repeats, dev)
                row.update(us=us, gb_per_s=kv_bytes / (us * 1e-6) / 1e9)
                step_us[name] += us * count
            except Exception as exc:  # noqa: BLE001 - report the kernel as failed, time the others
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                step_us[name] = float("nan")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"prompt": prompt, "layer_tokens": tokens, "rows": rows, "attention_ms_per_step":
            {k: v / 1e3 for k, v in step_us.items()}, "kv_bytes_per_step": kv_step}


def token_check(dev: torch.device) -> list[dict]:
    """Tiny float32 Llama on ``dev``: the static decode with each kernel against the eager decode."""
    results = []
    ids = torch.randint(0, 256, (1, 301), generator=torch.Generator().manual_seed(5))
    for pruned in (False, True):
        model = tiny_model("llama", seed=0).to(dev)
        pipe = SlimPipeline.from_pretrained(model, config=PRUNED if pruned else {})
        eager = pipe.generate(ids, max_new_tokens=48).token_ids
        for kernel in ("triton", "split"):
            for compiled in ((False, True) if dev.type == "cuda" else (False,)):
                row = {"pruned": pruned, "kernel": kernel, "compiled": compiled}
                try:
                    fast = static_generate(pipe, ids, 48, options={"kernel": kernel, "compile": compiled})
                    row.update(equal=fast.token_ids == eager, graph=fast.decoder.graph is not None,
                               graph_error=fast.decoder.graph_error)
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                results.append(row)
                print(json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32768)
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--smoke", action="store_true", help="CPU, float32, a 1k prompt: checks the script, not "
                        "speed (the triton rows need TRITON_INTERPRET=1)")
    args = parser.parse_args()
    if args.smoke:
        import sliminfer.decode.kernels as kernels

        kernels.triton_decode_available = lambda device: True  # the interpreter
        dev, dtype, args.prompt, args.calls, args.repeats = torch.device("cpu"), torch.float32, 1024, 1, 1
    else:
        dev, dtype = torch.device("cuda"), torch.bfloat16
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke)"
    record = {"device": name, "torch": torch.__version__}
    record["kernels"] = kernel_table(args.prompt, args.calls, args.repeats, dev, dtype)
    record["tokens"] = token_check(dev)
    print(f"\ndecode attention, 8B shape, paper schedule, {args.prompt} prompt (+{NEW_TOKENS // 2} generated), "
          f"{record['device']}; K+V per step {record['kernels']['kv_bytes_per_step'] / 1e9:.2f} GB")
    print(f"{'kernel':8} {'attention ms/step':>18} {'GB/s':>8}")
    for name, ms in record["kernels"]["attention_ms_per_step"].items():
        gbs = record["kernels"]["kv_bytes_per_step"] / (ms * 1e-3) / 1e9 if ms == ms else float("nan")
        print(f"{name:8} {ms:18.3f} {gbs:8.0f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "decode_kernels.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
