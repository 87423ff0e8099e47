"""``sliminfer eval TASK --configs A B ...``: accuracy of configs side by side on the same samples.

Results go to ``--out`` (default ``eval/results``): ``<task>.jsonl`` (one line per config and sample;
re-running skips finished pairs), ``<task>.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from sliminfer.cli import checks
from sliminfer.eval.base import Task
from sliminfer.eval.needles import VALUE_KINDS, VARIANTS
from sliminfer.eval.tasks import DEPTHS, TASKS, build_task


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare configs on accuracy tasks (needle, passkey, lm, QA, LongBench)")
    p.add_argument("task", choices=TASKS, help="which task")
    p.add_argument("--configs", nargs="+", default=["origin"], help="preset names or YAML paths; the first is the "
                   "reference (all must share the model section)")
    p.add_argument("--lengths", nargs="+", type=int,
                   help="context lengths in tokens, each at least 1 (LongBench: one max length)")
    p.add_argument("--depths", nargs="+", type=float, default=list(DEPTHS),
                   help="needle depths in [0, 1] (needle, passkey)")
    p.add_argument("--samples", type=int, help="samples per length (and depth), at least 1; LongBench: first N lines")
    p.add_argument("--seed", type=int, default=0, help="seed of every sample generator")
    p.add_argument("--out", type=Path, default=Path("eval/results"), help="results directory (created if missing)")
    p.add_argument("--variant", default="single", choices=VARIANTS,
                   help="needle variant")
    p.add_argument("--values", default="number", choices=VALUE_KINDS, help="needle values: 7 digits or UUIDs")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap prompts in the chat template (default: on for QA and LongBench, off for needles)")
    p.add_argument("--data", type=Path, help="LongBench <dataset>.jsonl")
    p.add_argument("--prompts", type=Path, help="LongBench dataset2prompt.json (for the paper's prompts)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report-only", action="store_true",
                   help="evaluate nothing: rewrite the report from the records already in --out for these samples "
                        "and configs (e.g. after runs that covered different lengths or depths)")
    p.set_defaults(func=_run)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the values that need no model to judge, before any config or weight loads."""
    if args.lengths is not None:
        checks.positive_ints("--lengths", args.lengths, "context tokens")
    checks.fractions("--depths", args.depths, "0: the start of the context, 1: its end")
    if args.samples is not None:
        checks.positive_int("--samples", args.samples, "samples per length and depth; LongBench: first N lines")
    checks.output_dir("--out", args.out)


def make_task(args: argparse.Namespace) -> Task:
    """The task the arguments describe, with per-task defaults filled in."""
    return build_task(args.task, lengths=args.lengths, samples=args.samples, seed=args.seed, depths=args.depths,
                      variant=args.variant, values=args.values, chat=args.chat, data=args.data, prompts=args.prompts)


def command_line(args: argparse.Namespace, task: Task) -> str:
    """The canonical command that reproduces this run (defaults spelled out)."""
    parts = ["sliminfer", "eval", args.task, "--configs", *args.configs, "--seed", str(args.seed),
             "--out", str(args.out)]
    lengths = getattr(task, "lengths", None) or ([task.max_length] if getattr(task, "max_length", None) else [])
    if lengths:
        parts += ["--lengths", *map(str, lengths)]
    if task.heatmap:
        parts += ["--depths", *map(str, getattr(task, "depths", ()))]
    if getattr(task, "n_samples", None) is not None:
        parts += ["--samples", str(task.n_samples)]
    if args.task == "needle":
        parts += ["--variant", args.variant, "--values", args.values]
    for flag, value in (("--data", args.data), ("--prompts", args.prompts)):
        if value is not None:
            parts += [flag, str(value)]
    if hasattr(task, "chat_template"):
        parts.append("--chat" if task.chat_template else "--no-chat")
    if args.report_only:
        parts.append("--report-only")
    return shlex.join(parts)


def _run(args: argparse.Namespace) -> int:
    from sliminfer.eval.report import metric_table, write_report
    from sliminfer.eval.runner import build_pipelines, resolve_configs, run_task

    check_arguments(args)
    configs = resolve_configs(args.configs)  # fails on a bad config before any weight loads
    task = make_task(args)
    pipes = build_pipelines(configs)
    records = run_task(task, configs, pipes, args.out, progress=not args.no_progress, evaluate=not args.report_only)
    paths = write_report(task, records, configs, args.out, command_line(args, task))
    print(metric_table(task, task.metrics[0], records, [c.name for c in configs]))
    print("\nwrote " + ", ".join(str(p) for p in [args.out / f"{task.name}.jsonl", *paths]))
    return 0
