"""``sliminfer bench [CONFIG] [key=value ...]``: time stock transformers against sliminfer.

The equivalent of the authors' ``demo.py --mode origin|sliminfer``: a grid of prompt lengths x
output lengths, every mode in one process on the same prompts, written as JSON plus a PNG plot, with
the tables printed last. Stock runs in three variants by default (generate as it comes, with cuDNN
attention excluded, with a static cache that transformers compiles on CUDA), and every sliminfer
speedup is given against plain stock and against the best of them. Examples::

    sliminfer bench llama-3.1-8b --shape llama-3.1-8b --prompt-lengths 8k,16k,32k --output-lengths 256
    sliminfer bench my.yaml model.source=/models/Qwen2.5-7B-Instruct --prompt-lengths 16k
    sliminfer bench --shape tiny-llama model.device=cpu --prompt-lengths 256,512 --output-lengths 8

Write CONFIG and the key=value overrides next to each other (all before or all after the options).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from sliminfer.bench.cost import H100_SXM_BANDWIDTH
from sliminfer.bench.grid import ALL_MODES, DECODERS, MODES, GridSettings
from sliminfer.bench.measure import copy_bandwidth
from sliminfer.bench.report import plot, summary, write_json
from sliminfer.bench.run import load_bench_pipeline, run_bench
from sliminfer.bench.shapes import shape_names
from sliminfer.cli import checks
from sliminfer.core.errors import ConfigError
from sliminfer.core.pipeline import load_config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="time TTFT and end-to-end latency, stock transformers vs sliminfer",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML path or preset name (default: unpruned defaults)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. model.dtype=bfloat16")
    parser.add_argument("--shape", choices=shape_names(),
                        help="build this architecture in code with random weights (speed only), instead of "
                             "model.source")
    parser.add_argument("--prompt-lengths", default="1k,2k", type=length_list,
                        help="prompt tokens, comma list, each at least 1; 8k means 8192")
    parser.add_argument("--output-lengths", default="", type=length_list,
                        help="new tokens of the end-to-end runs, comma list, each at least 2 (the first token comes "
                             "from the prefill); empty (the default) or 0 alone: TTFT only")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement, at least 1 (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them, 0 or more")
    parser.add_argument("--modes", default=",".join(MODES), type=choice_list(ALL_MODES),
                        help="comma list of stock (generate as it comes), stock_no_cudnn (the same with cuDNN "
                             "attention excluded on CUDA), stock_static (generate with a static cache, compiled "
                             "on CUDA: end to end only) and sliminfer (default: all)")
    parser.add_argument("--decode", default=",".join(DECODERS), type=choice_list(DECODERS),
                        help="sliminfer end-to-end decode paths: eager and/or static (its kernel, graph and "
                             "compile come from the config's decode section, e.g. decode.kernel=sdpa)")
    parser.add_argument("--no-ttft", action="store_true", help="skip the separate TTFT measurements")
    parser.add_argument("--bandwidth", type=bandwidth_arg, default=H100_SXM_BANDWIDTH,
                        help="memory bandwidth in bytes/s for the decode floor (default: the H100 SXM's 3.35e12), "
                             "or 'copy': what a device-to-device copy moves on this run's device, measured first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/bench"),
                        help="directory for the JSON and PNG (created if missing)")
    parser.add_argument("--name", help="file name stem (default: bench-<model>)")
    parser.add_argument("--no-plot", action="store_true")
    parser.set_defaults(func=_run)


def length_list(text: str) -> list[int]:
    """A comma list of token counts (``8k`` is 8192), as the bench and compare flags take them."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"(\d+)([kK]?)", item)
        if not match:
            raise argparse.ArgumentTypeError(f"{item!r} is not a token count (e.g. 4096 or 4k)")
        out.append(int(match.group(1)) * (1024 if match.group(2) else 1))
    return out


def bandwidth_arg(text: str) -> float | str:
    """``--bandwidth``: a positive number of bytes/s, or ``copy`` (measure a device-to-device copy)."""
    if text == "copy":
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give bytes/s (e.g. 4.3e12) or 'copy'")
    return value


def choice_list(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a non-empty comma list of names from ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(filter(None, (t.strip() for t in text.split(","))))
        bad = [i for i in items if i not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return items

    return parse


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the values that need no model to judge, before the config loads and anything is timed."""
    checks.positive_ints("--prompt-lengths", args.prompt_lengths, "prompt tokens")
    outputs = list(args.output_lengths)
    if outputs != [0] and any(n < 2 for n in outputs):
        raise ConfigError("--output-lengths", outputs, "each must be at least 2 (an end-to-end run decodes after "
                          "the prefill's first token); 0 alone or nothing (the default) for TTFT only")
    if args.no_ttft and not any(outputs):
        raise ConfigError("--no-ttft", True, "with no --output-lengths there is nothing left to measure; give "
                          "output lengths for end-to-end runs, or drop --no-ttft")
    checks.positive_int("--repeats", args.repeats, "timed runs per measurement")
    checks.non_negative_int("--warmup", args.warmup, "untimed runs before them")
    checks.output_dir("--out", args.out)


def _run(args: argparse.Namespace) -> int:
    check_arguments(args)
    overrides = list(args.overrides)
    config_source = args.config
    if config_source is not None and "=" in config_source:  # no config given, only overrides
        overrides.insert(0, config_source)
        config_source = None
    config = load_config(config_source, overrides)
    pipe, info = load_bench_pipeline(config, args.shape, args.seed)
    bandwidth, source = args.bandwidth, "given"
    if bandwidth == "copy":
        bandwidth, source = copy_bandwidth(pipe.device), "measured copy"
        print(f"a device-to-device copy moves {bandwidth / 1e12:.2f} TB/s here (bytes read + written): the floor's "
              "bandwidth")
    settings = GridSettings(
        prompt_lengths=args.prompt_lengths, output_lengths=args.output_lengths, repeats=args.repeats,
        warmup=args.warmup, modes=args.modes, decoders=args.decode, measure_ttft=not args.no_ttft,
        bandwidth=bandwidth, bandwidth_source=source, seed=args.seed,
    )
    record = run_bench(pipe, info, settings)
    stem = args.name or f"bench-{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(str(info['name'])).name)}"
    print(f"wrote {write_json(record, args.out / f'{stem}.json')}")
    if not args.no_plot:
        png = plot(record, args.out / f"{stem}.png")
        if png is not None:
            print(f"wrote {png}")
    print()
    print(summary(record))
    return 0
