"""Where the eager decode step's time goes: CUDA-event ms/token and the top kernels of a profile.

Diagnoses why the GPU-resident eager decode measured 174.7 ms/token at 32k in the offload bench
(run 4) but about 28 ms/token in the end-to-end grid (run 3). Llama-3.1-8B configuration, random
bf16 weights, the paper's schedule; one pruned prefill per case, then ``--steps`` eager
``decode_step`` calls (CUDA events per step, median), then a ``torch.profiler`` trace of 3 steps with
its top kernels printed. Cases: the generated-token reserve (37 as in the offload bench, 256 as in
the grid) and the SDPA backends allowed.

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/decode_probe.py --prompt 32768
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_bench import SCHEDULE, build_model, free, random_ids, timed_step  # noqa: E402

from sliminfer import SlimPipeline  # noqa: E402


def step_times(pipe: SlimPipeline, ids: torch.Tensor, reserve: int, steps: int) -> tuple[list[float], Any]:
    prefill = pipe.prefill(ids, reserve_tokens=reserve)
    token, position = prefill.logits.argmax(-1, keepdim=True), ids.shape[1]
    times = []
    for i in range(steps + 2):
        token, gpu, _ = timed_step(pipe, token, position, prefill.cache)
        if i >= 2:
            times.append(gpu)
        position += 1
    return times, (prefill, token, position)


def top_kernels(pipe: SlimPipeline, state: Any, rows: int) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    prefill, token, position = state
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            token = pipe.forward.decode_step(token, position, prefill.cache).argmax(-1, keepdim=True)
            position += 1
        torch.cuda.synchronize()
    averages = prof.key_averages()
    by_device = sorted((e for e in averages if e.device_time_total > 0), key=lambda e: e.device_time_total,
                       reverse=True)[:rows]
    by_host = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [{"name": e.key[:90], "calls": e.count, "device_ms_per_step": e.device_time_total / 3e3,
             "self_cpu_ms_per_step": e.self_cpu_time_total / 3e3} for e in [*by_device, *by_host]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--cases", default="all", help="all, or 'offload': the offload manager (budget 2048, "
                        "gamma 0.9 and 0) with the default kernels")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = parser.parse_args()
    model = build_model()
    pipe = SlimPipeline.from_pretrained(model, config={"pruning": {"schedule": SCHEDULE}})
    ids = random_ids(args.prompt, model.config.vocab_size, seed=1)
    result: dict[str, Any] = {"prompt": args.prompt, "cases": {}}
    backends = {"default": None, "flash_only": [torch.nn.attention.SDPBackend.FLASH_ATTENTION],
                "efficient_only": [torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION]}
    if args.cases == "offload":
        for gamma in (0.9, 0.0):
            cache = {"name": "offload", "decode_budget": 2048, "gamma": gamma}
            off = SlimPipeline.from_pretrained(model, config={"pruning": {"schedule": SCHEDULE}, "cache": cache})
            times, state = step_times(off, ids, 37, args.steps)
            case = {"ms_per_token": statistics.median(times), "times": times, "kernels": top_kernels(off, state, 12)}
            del state
            free()
            result["cases"][f"offload-gamma{gamma}"] = case
            print(f"offload gamma {gamma}: {case['ms_per_token']:.2f} ms/token", flush=True)
            for k in case["kernels"]:
                print(f"    device {k['device_ms_per_step']:7.2f}  self cpu {k['self_cpu_ms_per_step']:7.2f} ms/step"
                      f"  x{k['calls']:<5} {k['name']}", flush=True)
    for reserve in (37, 256) if args.cases == "all" else ():
        for label, allowed in backends.items():
            name = f"reserve{reserve}-{label}"
            ctx = torch.nn.attention.sdpa_kernel(allowed) if allowed else contextlib.nullcontext()
            try:
                with ctx:
                    times, state = step_times(pipe, ids, reserve, args.steps)
                    kernels = top_kernels(pipe, state, 8) if label == "default" else []
                case = {"ms_per_token": statistics.median(times), "times": times, "kernels": kernels}
                del state
            except Exception as exc:  # noqa: BLE001 - a backend may refuse these shapes
                case = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            free()
            result["cases"][name] = case
            print(name, {k: v for k, v in case.items() if k != "times" and k != "kernels"}, flush=True)
            for k in case.get("kernels", []):
                print(f"    {k['device_ms_per_step']:8.2f} ms/step  x{k['calls']:<5} {k['name']}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "decode_probe.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
