"""Where a graph-replayed decode step's GPU time goes: kernels grouped by kind, per step.

Llama-3.1-8B configuration, random bf16 weights, the paper's schedule, a 32k prompt; the static
decoder with split-KV attention, not compiled unless ``--compile`` (compiling takes a minute; the
compiled step fuses the small elementwise kernels further); ``torch.profiler`` over ``--steps`` graph
replays. Prints each
kernel group's GPU ms per step and share, beside the bandwidth floor of the step (weights + KV read),
and writes ``decode_profile.json`` under ``--out``.

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/decode_profile.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
import torch._inductor.config as inductor  # TORCHINDUCTOR_MAX_AUTOTUNE=1 etc. set it, for a tuning comparison

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_bench import SCHEDULE, build_model, random_ids  # noqa: E402

from sliminfer import SlimPipeline  # noqa: E402
from sliminfer.bench.cost import DEVICE_COPY_BANDWIDTH, ModelCost  # noqa: E402
from sliminfer.core.config import DecodeSection  # noqa: E402
from sliminfer.decode.static import StaticDecoder  # noqa: E402

GROUPS = (("gemv/gemm (projections, MLP, LM head)", ("gemm", "gemv", "nvjet", "cutlass", "sm90")),
          ("attention scores / values (bmm)", ("bmm",)),
          ("softmax / reductions", ("softmax", "reduce", "sum")),
          ("copies / index (KV write, masks)", ("copy", "index", "scatter", "fill")),
          ("elementwise (norms, RoPE, residual, SiLU)", ("elementwise", "vectorized", "unrolled", "pow", "mul",
                                                          "add", "rsqrt", "silu", "cat")))


def group_of(name: str) -> str:
    low = name.lower()
    for label, keys in GROUPS:
        if any(k in low for k in keys):
            return label
    return "other"


def kernel_breakdown(events, per: float, group=group_of) -> tuple[dict[str, float], list[dict[str, object]]]:
    """GPU ms of a profile's kernels (``torch.profiler``'s ``key_averages()``) divided by ``per`` (steps, or 1):
    summed by ``group`` of the kernel name, and each kernel's own, slowest first. Only the kernels themselves
    count: host-side ranges that carry their kernels' time too (a compiled region, inductor's launch
    annotations named after the kernel) would count it twice."""
    per_group: dict[str, float] = defaultdict(float)
    kernels = []
    for e in events:
        if e.device_time_total <= 0 or e.key.startswith("aten::") or e.device_type != DeviceType.CUDA:
            continue
        ms = e.device_time_total / 1e3 / per
        per_group[group(e.key)] += ms
        kernels.append({"name": e.key[:100], "calls": e.count / per, "ms": ms})
    kernels.sort(key=lambda k: -k["ms"])
    return dict(per_group), kernels


def print_breakdown(per_group: dict[str, float], kernels: list[dict[str, object]], top: int) -> None:
    """Each group's ms and share, then the ``top`` slowest kernels."""
    total = sum(per_group.values())
    for label, ms in sorted(per_group.items(), key=lambda kv: -kv[1]):
        print(f"  {ms:8.3f} ms  {ms / total:6.1%}  {label}")
    for k in kernels[:top]:
        print(f"    {k['ms']:8.3f} ms  x{k['calls']:<5.0f} {k['name']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--compile", action="store_true", help="profile the compiled step (the default decode)")
    parser.add_argument("--kernel", default="split", help="decode.kernel: split (auto when compiled), flex, sdpa...")
    parser.add_argument("--bandwidth", type=float, default=DEVICE_COPY_BANDWIDTH,
                        help="bytes/s of the floor (default: an H200's measured device-to-device copy rate)")
    parser.add_argument("--name", default="decode_profile", help="the JSON's file name, without .json")
    args = parser.parse_args()
    model = build_model()
    pipe = SlimPipeline.from_pretrained(model, config={"pruning": {"schedule": SCHEDULE}})
    ids = random_ids(args.prompt, model.config.vocab_size, seed=1)
    prefill = pipe.prefill(ids)
    token = prefill.logits.argmax(-1, keepdim=True)
    decoder = StaticDecoder.for_prefill(pipe.adapter, prefill, 2 * args.steps + 1,
                                         DecodeSection(mode="static", kernel=args.kernel, compile=args.compile))
    decoder.load(prefill, token)  # captures the graph
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    decoder.decode(args.steps)
    end.record()
    end.synchronize()
    wall_ms = start.elapsed_time(end) / args.steps
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        decoder.decode(args.steps)
        torch.cuda.synchronize()
    per_group, kernels = kernel_breakdown(prof.key_averages(), args.steps)
    total = sum(per_group.values())
    cost = ModelCost.of(pipe.adapter)
    floor_ms = cost.decode_floor_s(prefill.tokens_per_layer, args.steps, args.bandwidth) * 1e3
    step_bytes = floor_ms * 1e-3 * args.bandwidth
    achieved = step_bytes / (wall_ms * 1e-3) / 1e9
    print(f"graph decode ({args.kernel}, {'compiled' if args.compile else 'not compiled'}), {args.prompt} prompt: "
          f"{wall_ms:.2f} ms/token wall ({achieved:.0f} GB/s of {step_bytes / 1e9:.2f} GB/step); GPU kernels "
          f"{total:.2f} ms/step; floor {floor_ms:.2f} ms at {args.bandwidth / 1e12:.2f} TB/s")
    print_breakdown(per_group, kernels, 12)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    tuning = {"max_autotune": inductor.max_autotune, "coordinate_descent_tuning": inductor.coordinate_descent_tuning}
    print(f"inductor: {tuning}")
    (Path(args.out) / f"{args.name}.json").write_text(json.dumps(
        {"prompt": args.prompt, "inductor": tuning, "device": torch.cuda.get_device_name(), "steps": args.steps, "compiled": args.compile, "kernel": args.kernel, "wall_ms_per_token": wall_ms,
         "bytes_per_step": step_bytes, "achieved_gb_per_s": achieved, "floor_bandwidth": args.bandwidth,
         "gpu_ms_per_step": total, "floor_ms": floor_ms, "groups": per_group, "kernels": kernels[:40]}, indent=1))


if __name__ == "__main__":
    main()
