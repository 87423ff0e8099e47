"""``sliminfer run CONFIG [key=value ...] --prompt TEXT | --prompt-file PATH``: generate once."""

from __future__ import annotations

import argparse
from pathlib import Path

from sliminfer.cli.format import layer_runs, mib
from sliminfer.core.config import load_config
from sliminfer.core.errors import InputError
from sliminfer.core.pipeline import SlimPipeline


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="generate from a prompt with a config")
    parser.add_argument("config", help="YAML path or preset name")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. generation.max_new_tokens=32")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", type=Path, help="file holding the prompt text")
    parser.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    parser.add_argument("--fast", action="store_true",
                        help="greedy decode with static buffers, replayed as a CUDA graph on GPUs (no stop strings)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.prompt_file is not None and not args.prompt_file.is_file():
        raise InputError(f"--prompt-file: {str(args.prompt_file)!r} is not a file")
    prompt = args.prompt if args.prompt is not None else args.prompt_file.read_text(encoding="utf-8")
    pipe = SlimPipeline.from_config(load_config(args.config, args.overrides))
    out = pipe.generate(prompt, chat_template=False if args.no_chat else None, fast=args.fast)
    print(out.text)
    pre = out.prefill
    print(
        f"\n[{out.prompt_tokens} prompt tokens | TTFT {out.ttft_s:.3f} s | {out.decode_s_per_token * 1e3:.1f} ms/token"
        f" | KV {mib(pre.kv_bytes)} ({pre.kv_saved_fraction:.1%} saved) | tokens per layer {layer_runs(pre.tokens_per_layer)}]"
    )
    return 0
