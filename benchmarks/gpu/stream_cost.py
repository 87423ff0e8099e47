"""What streaming costs the static decode (CUDA graph), and that it streams the right tokens.

Why: without a streamer the static decode queues every step and syncs once at the end; a streamer needs
each token on the host as it comes, which the decoder reads one step late from pinned memory
(StaticDecoder.decode). This times ``generate(fast=True)`` with and without a streamer (one that only
counts, so the host work is the decoder's own), checks both give the same tokens, and that a streamed
decode stops at an EOS id (``generation_config.eos_token_id``) with the tokens the unstreamed one cuts.
Random bf16 weights (speed only), unpruned prompt ("origin"), batch 1:
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/stream_cost.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from transformers import GenerationConfig

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.shapes import build_random_model

RUNS = (("smollm2-135m", 2048), ("llama-3.1-8b", 8192))


class CountingStreamer:
    """Takes the tokens and does nothing else: the cost measured is the decoder's, not a tokenizer's."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if value.dim() == 1:  # the prompt comes as [1, n] first
            self.tokens.extend(value.tolist())

    def end(self) -> None:
        pass


def measure(shape: str, prompt: int, new_tokens: int = 128, repeats: int = 3) -> dict:
    device = torch.device("cuda")
    model = build_random_model(shape, torch.bfloat16, device, "sdpa", 0)
    pipe = SlimPipeline(model, None, load_config("origin"))
    ids = torch.randint(0, model.config.vocab_size - 1, (1, prompt), generator=torch.Generator().manual_seed(0))
    pipe.generate(ids, max_new_tokens=new_tokens, fast=True)  # compile and capture once
    plain, streamed, same = [], [], True
    for _ in range(repeats):  # interleaved
        a = pipe.generate(ids, max_new_tokens=new_tokens, fast=True)
        streamer = CountingStreamer()
        b = pipe.generate(ids, max_new_tokens=new_tokens, fast=True, streamer=streamer)
        plain.append(a.decode_s_per_token)
        streamed.append(b.decode_s_per_token)
        same &= a.token_ids == b.token_ids == streamer.tokens
    tokens = a.token_ids
    eos = tokens[new_tokens // 2]
    cut = tokens[: tokens.index(eos) + 1]
    streamer = CountingStreamer()
    config = GenerationConfig(max_new_tokens=new_tokens, eos_token_id=eos)
    stopped = pipe.generate(ids, fast=True, generation_config=config, streamer=streamer)
    unstreamed = pipe.generate(ids, fast=True, generation_config=config)
    ms, ms_streamed = statistics.median(plain) * 1e3, statistics.median(streamed) * 1e3
    return {
        "shape": shape, "prompt": prompt, "new_tokens": new_tokens, "device": torch.cuda.get_device_name(),
        "decode_ms_per_token": ms, "streamed_decode_ms_per_token": ms_streamed,
        "streaming_overhead_pct": (ms_streamed / ms - 1) * 100,
        "same_tokens": same, "graph": pipe._static_decoder is not None and pipe._static_decoder.graph is not None,
        "eos_stop_ok": stopped.token_ids == streamer.tokens == cut == unstreamed.token_ids,
        "eos_stop_total_s": stopped.total_s, "unstreamed_eos_total_s": unstreamed.total_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write stream_cost.json here")
    parser.add_argument("--shapes", nargs="+", default=[shape for shape, _ in RUNS], choices=[s for s, _ in RUNS])
    args = parser.parse_args()
    results = [measure(shape, prompt) for shape, prompt in RUNS if shape in args.shapes]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "stream_cost.json").write_text(json.dumps(results, indent=1))
    print(f"{'shape':14} {'prompt':>6} {'ms/token':>9} {'streamed':>9} {'overhead':>9} same  eos-stop graph")
    for r in results:
        print(f"{r['shape']:14} {r['prompt']:6d} {r['decode_ms_per_token']:9.3f} "
              f"{r['streamed_decode_ms_per_token']:9.3f} {r['streaming_overhead_pct']:8.1f}% "
              f"{r['same_tokens']!s:5} {r['eos_stop_ok']!s:8} {r['graph']}")


if __name__ == "__main__":
    main()
