"""Where a pruned prefill's time goes: GPU kernels grouped by kind, and how long the GPU sits idle.

Why: at 32k the paper's schedule plus FlexPrefill @10 % takes about 0.45 s on an H100, of which its
matmuls (about 188 TFLOP) took 245 ms; this says whether the rest is elementwise kernels (norms, RoPE,
SiLU over 32k-token activations), the sparse attention's estimation and mask building, or the host
keeping the GPU waiting (benchmarks/results/README.md: mostly the first). Llama-3.1-8B shape, random bf16 weights, the ``llama-3.1-8b`` preset with the
``key=value`` overrides given; ``prefill`` timed with CUDA events (median of ``--repeats`` after one
warm-up), then ``torch.profiler`` over one more. Writes ``<name>.json`` under ``--out``.

    python3 benchmarks/gpu/prefill_profile.py --out $OUT attention.name=flexprefill attention.density=0.1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_profile import group_of, kernel_breakdown, print_breakdown  # noqa: E402

from sliminfer import SlimPipeline, load_config  # noqa: E402
from sliminfer.bench.measure import Meter  # noqa: E402
from sliminfer.bench.shapes import build_random_model  # noqa: E402

#: prefill kernels the decode's groups do not name, looked up first
PREFILL_GROUPS = (("attention (flash / flex / sdpa)", ("flash", "fmha", "attention", "triton_tem", "flex")),)


def prefill_group(name: str) -> str:
    low = name.lower()
    for label, keys in PREFILL_GROUPS:
        if any(k in low for k in keys):
            return label
    return group_of(name)


def compiled_vs_eager(model: torch.nn.Module, overrides: list[str], ids: torch.Tensor, compiled) -> dict:
    """bf16 check of ``prefill.compile`` on the GPU: the same prefill without it, on the same model and prompt.
    Compiled kernels round differently, so the logits differ a little, and with random weights (nearly uniform
    attention) near-ties in the pruning scores flip: the kept positions are compared as the share of each
    layer's positions both keep."""
    eager_overrides = [o for o in overrides if not o.replace(" ", "").lower().startswith("prefill.compile=")]
    eager = SlimPipeline(model, None, load_config("llama-3.1-8b", eager_overrides)).prefill(ids)
    a, b = compiled.logits.float(), eager.logits.float()
    shared = [len(set(x.tolist()) & set(y.tolist())) / max(len(y), 1)
              for x, y in zip(compiled.kept_positions, eager.kept_positions)]
    out = {"max_abs_logit_diff": float((a - b).abs().max()), "logit_scale": float(b.abs().max()),
           "same_next_token": bool(torch.equal(a.argmax(-1), b.argmax(-1))),
           "kept_positions_shared_min": min(shared), "kept_positions_shared_mean": sum(shared) / len(shared)}
    print("prefill.compile vs eager (bf16):", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the llama-3.1-8b preset")
    parser.add_argument("--prompt", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--name", default="prefill_profile")
    args = parser.parse_args()
    device = torch.device("cuda")
    model = build_random_model("llama-3.1-8b", torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("llama-3.1-8b", args.overrides))
    ids = torch.randint(0, 128000, (1, args.prompt), generator=torch.Generator().manual_seed(0)).to(device)
    result = pipe.prefill(ids)  # warm-up: compiles FlexAttention's kernels (and prefill.compile's graph)
    compiled = any(o.replace(" ", "").lower() == "prefill.compile=true" for o in args.overrides)
    check = compiled_vs_eager(model, args.overrides, ids, result) if compiled else None
    timed = Meter(device, warmup=0, repeats=args.repeats).measure_or_raise(lambda: pipe.prefill(ids))
    wall_ms, times = timed["median_s"] * 1e3, [t * 1e3 for t in timed["times_s"]]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        pipe.prefill(ids)
        torch.cuda.synchronize()
    events = prof.key_averages()
    per_group, kernels = kernel_breakdown(events, 1, prefill_group)
    host_ops = sorted(({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3}
                       for e in events if e.key.startswith("aten::") and e.self_cpu_time_total > 0),
                      key=lambda h: -h["self_cpu_ms"])
    busy = sum(per_group.values())
    print(f"prefill {args.prompt} tokens {args.overrides}: {wall_ms:.1f} ms (median of {args.repeats}); GPU kernels "
          f"{busy:.1f} ms, idle {wall_ms - busy:.1f} ms ({(wall_ms - busy) / wall_ms:.0%})")
    print_breakdown(per_group, kernels, 20)
    print("host (self CPU ms):", ", ".join(f"{h['name']} {h['self_cpu_ms']:.1f} x{h['calls']}" for h in host_ops[:10]))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.name}.json").write_text(json.dumps(
        {"prompt": args.prompt, "overrides": args.overrides, "device": torch.cuda.get_device_name(),
         "torch": torch.__version__, "compiled_vs_eager": check, "wall_ms": wall_ms, "times_ms": times,
         "gpu_busy_ms": busy, "groups": per_group,
         "kernels": kernels[:60], "host_ops": host_ops[:40]}, indent=1))


if __name__ == "__main__":
    main()
