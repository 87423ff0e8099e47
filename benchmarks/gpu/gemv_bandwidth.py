"""How close a batch-1 matrix-vector product gets to the memory bandwidth, per projection shape.

Why: a decode step at batch 1 is mostly GEMVs over the weights, so the step cannot beat the GEMVs'
achieved GB/s; this separates what cuBLAS reaches (the ceiling of any decode built on it) from what
the rest of the step costs. Llama-3.1-8B's projection shapes in bf16, each timed as 50 back-to-back
calls inside one CUDA graph (no launch gaps), medians of 5 replays; beside them a device-to-device copy
of the same bytes (the bandwidth the floor in benchmarks uses).

    PYTHONPATH=$PWD python3 benchmarks/gpu/gemv_bandwidth.py > gemv.json
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from sliminfer.bench.measure import graph_seconds_per_call

SHAPES = {"qkv (fused)": (6144, 4096), "o_proj": (4096, 4096), "gate_up (fused)": (28672, 4096),
          "down_proj": (4096, 14336), "lm_head": (128256, 4096)}
CALLS = 50


def main() -> dict[str, object]:
    rows = []
    for name, (out_f, in_f) in SHAPES.items():
        # several weights in rotation so no call finds its weight in the 50 MB L2 cache
        weights = [torch.randn(out_f, in_f, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
        x = torch.randn(1, in_f, device="cuda", dtype=torch.bfloat16)
        nbytes = weights[0].numel() * 2
        state = {"i": 0}

        def gemv(weights: list[torch.Tensor] = weights) -> None:
            state["i"] = (state["i"] + 1) % len(weights)
            F.linear(x, weights[state["i"]])

        src, dst = weights[0].view(-1), torch.empty_like(weights[0]).view(-1)
        ms, copy_ms = (1e3 * graph_seconds_per_call(f, CALLS, 5, x.device) for f in (gemv, lambda: dst.copy_(src)))
        rows.append({"name": name, "shape": [out_f, in_f], "mb": nbytes / 1e6, "gemv_ms": ms,
                     "gemv_gb_per_s": nbytes / ms / 1e6, "copy_read_write_gb_per_s": 2 * nbytes / copy_ms / 1e6})
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1), flush=True)
