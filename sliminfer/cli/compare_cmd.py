"""``sliminfer compare CONFIG...``: speed and accuracy of configs in one table, plus a Pareto plot.

Each CONFIG (a preset name or a YAML path, as ``bench`` and ``eval`` take them) is one row. The speed
side times every row on one model of ``--shape`` with random weights (TTFT at ``--lengths``, end to
end at ``--e2e-lengths``, prompt KV memory, speedups over the unpruned row and over the best stock
variant); the accuracy side runs ``--tasks`` on the real default model, the same samples for every
row, with 95 % bootstrap intervals. A row's own model section is not used: every row runs on the same
two models. A row that does not fit a side's model says so in its cells. Examples::

    sliminfer compare origin llama-3.1-8b my-peer.yaml --samples 100
    sliminfer compare origin smollm2-135m --device cpu --lengths 1k,2k --samples 10 --out out/cmp

Writes ``compare.md``, ``compare.json`` and ``compare_pareto.png`` under ``--out`` (and the accuracy
records under ``--out``/accuracy, reused by a re-run); prints the report last. key=value overrides
(e.g. ``decode.compile=false``) apply to every row.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from sliminfer.bench.grid import DECODERS
from sliminfer.bench.shapes import shape_names
from sliminfer.bench.stock import STOCK_MODES
from sliminfer.cli import checks
from sliminfer.cli.bench_cmd import choice_list, length_list
from sliminfer.compare.accuracy import TASKS, AccuracySettings
from sliminfer.compare.speed import SpeedSettings
from sliminfer.core.errors import ConfigError
from sliminfer.eval.tasks import DEPTHS

#: (shape, lengths) of the speed side when not given, on a GPU and on a CPU
GPU_DEFAULTS = ("llama-3.1-8b", [32768, 131072])
CPU_DEFAULTS = ("smollm2-135m", [1024, 2048])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="speed and accuracy of configs in one table (bench + eval), Pareto plot",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="preset names or YAML paths, one row each "
                   "(key=value items among them are overrides for every row)")
    sides = p.add_mutually_exclusive_group()
    sides.add_argument("--speed-only", action="store_true", help="only the speed side")
    sides.add_argument("--accuracy-only", action="store_true", help="only the accuracy side")
    p.add_argument("--device", default="auto", help=f"{checks.DEVICE_FORMS} (both sides)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="both sides (auto: bfloat16 on CUDA, float32 on the CPU)")
    speed = p.add_argument_group("speed side (random weights)")
    speed.add_argument("--shape", choices=shape_names(),
                       help=f"model shape (default: {GPU_DEFAULTS[0]} on CUDA, {CPU_DEFAULTS[0]} on the CPU)")
    speed.add_argument("--lengths", type=length_list, help="prompt lengths, comma list, 8k = 8192 "
                       "(default: 32k,128k on CUDA, 1k,2k on the CPU)")
    speed.add_argument("--e2e-lengths", type=length_list,
                       help="lengths with an end-to-end run, a subset of --lengths (default: the shortest)")
    speed.add_argument("--new-tokens", type=int, default=256, help="tokens of each end-to-end run (0: none)")
    speed.add_argument("--stock", default=",".join(STOCK_MODES), type=_stock_modes,
                       help=f"stock variants timed once for the 'x best stock' columns: comma list of "
                            f"{', '.join(STOCK_MODES)}, or none")
    speed.add_argument("--decode", default="static", type=choice_list(DECODERS),
                       help="sliminfer decode paths of the end-to-end runs (eager, static; the table shows the faster)")
    speed.add_argument("--repeats", type=int, default=3,
                       help="timed runs per measurement, at least 1 (median reported)")
    speed.add_argument("--warmup", type=int, default=1, help="untimed runs before them, 0 or more")
    accuracy = p.add_argument_group("accuracy side (real weights)")
    accuracy.add_argument("--tasks", nargs="+", default=["needle", "passkey"], choices=TASKS, help="eval tasks")
    accuracy.add_argument("--samples", type=int, default=20,
                          help="samples per task and config, at least 1, spread over lengths (x depths), rounded "
                               "up per cell")
    accuracy.add_argument("--accuracy-lengths", nargs="+", type=int, default=[1024, 2048, 4096],
                          help="context lengths in tokens of the accuracy prompts")
    accuracy.add_argument("--depths", nargs="+", type=float, default=list(DEPTHS),
                          help="needle/passkey depths in [0, 1]")
    accuracy.add_argument("--accuracy-model", default="smollm2-135m-instruct",
                          help="model.source of the accuracy side (the default model or a local checkpoint)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts, the samples and the bootstrap")
    p.add_argument("--out", type=Path, default=Path("out/compare"), help="results directory (created if missing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help="no Pareto plot")
    p.set_defaults(func=_run, overrides=[])


def _stock_modes(text: str) -> tuple[str, ...]:
    return () if text.strip() == "none" else choice_list(STOCK_MODES)(text)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the values that need no model to judge, before any config loads or model is built (both sides'
    flags, whichever sides run); the settings' own checks (lengths that fit the shape, ...) follow."""
    checks.device("--device", args.device)
    if args.lengths is not None:
        checks.positive_ints("--lengths", args.lengths, "prompt tokens")
    checks.positive_int("--repeats", args.repeats, "timed runs per measurement")
    checks.non_negative_int("--warmup", args.warmup, "untimed runs before them")
    checks.positive_int("--samples", args.samples, "samples per task and config")
    checks.positive_ints("--accuracy-lengths", args.accuracy_lengths, "context tokens")
    checks.fractions("--depths", args.depths, "0: the start of the context, 1: its end")
    checks.output_dir("--out", args.out)


def settings_from(args: argparse.Namespace) -> tuple[SpeedSettings | None, AccuracySettings | None]:
    """Both sides' settings from the arguments, device-dependent defaults filled in."""
    from sliminfer.core.loading import resolve_device

    if args.new_tokens < 0:
        raise ConfigError("--new-tokens", args.new_tokens, "must be 0 (no end-to-end runs) or at least 2")
    speed = accuracy = None
    if not args.accuracy_only:
        shape, lengths = GPU_DEFAULTS if resolve_device(args.device).type == "cuda" else CPU_DEFAULTS
        lengths = args.lengths or lengths
        e2e = args.e2e_lengths if args.e2e_lengths is not None else lengths[:1] if lengths else []
        speed = SpeedSettings(
            shape=args.shape or shape, lengths=lengths, e2e_lengths=e2e if args.new_tokens else [],
            new_tokens=args.new_tokens, stock_modes=args.stock, decoders=args.decode, repeats=args.repeats,
            warmup=args.warmup, device=args.device, dtype=args.dtype, seed=args.seed)
    if not args.speed_only:
        accuracy = AccuracySettings(
            tasks=tuple(args.tasks), samples=args.samples, lengths=tuple(args.accuracy_lengths),
            depths=tuple(args.depths), model=args.accuracy_model, device=args.device, dtype=args.dtype,
            seed=args.seed)
    return speed, accuracy


def command_line(configs: list[str], overrides: list[str], speed: SpeedSettings | None,
                 accuracy: AccuracySettings | None, args: argparse.Namespace) -> str:
    """The canonical command that reproduces this run (defaults spelled out)."""
    parts = ["sliminfer", "compare", *configs, *overrides, "--device", args.device, "--dtype", args.dtype]
    if speed:
        parts += ["--shape", speed.shape, "--lengths", ",".join(map(str, speed.lengths)),
                  "--e2e-lengths", ",".join(map(str, speed.e2e_lengths)), "--new-tokens", str(speed.new_tokens),
                  "--stock", ",".join(speed.stock_modes) or "none", "--decode", ",".join(speed.decoders),
                  "--repeats", str(speed.repeats), "--warmup", str(speed.warmup)]
    else:
        parts.append("--accuracy-only")
    if accuracy:
        parts += ["--tasks", *accuracy.tasks, "--samples", str(accuracy.samples),
                  "--accuracy-lengths", *map(str, accuracy.lengths), "--depths", *map(str, accuracy.depths),
                  "--accuracy-model", accuracy.model]
    else:
        parts.append("--speed-only")
    return shlex.join([*parts, "--seed", str(args.seed), "--out", str(args.out)])


def _run(args: argparse.Namespace) -> int:
    from sliminfer.compare.rows import load_rows
    from sliminfer.compare.run import run_compare

    check_arguments(args)
    configs = [c for c in args.configs if "=" not in c]
    overrides = [c for c in args.configs if "=" in c] + list(args.overrides)
    rows = load_rows(configs, overrides)  # an unknown config or bad override fails before any model work
    speed, accuracy = settings_from(args)
    command = command_line(configs, overrides, speed, accuracy, args)
    record, paths = run_compare(rows, speed, accuracy, args.out, command, progress=not args.no_progress,
                                plot=not args.no_plot)
    from sliminfer.compare.report import markdown

    print(markdown(record), end="")
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
