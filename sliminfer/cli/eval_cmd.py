"""``sliminfer eval TASK --configs A B ...``: accuracy of configs side by side on the same samples.

Results go to ``--out`` (default ``eval/results``): ``<task>.jsonl`` (one line per config and sample;
re-running skips finished pairs), ``<task>.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from sliminfer.eval.base import Task
from sliminfer.eval.needles import VALUE_KINDS, VARIANTS

TASKS = ("needle", "passkey", "lm", "hotpotqa", "squad", "longbench")
#: (lengths, samples) per task when not given on the command line
DEFAULTS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "needle": ((1024, 2048, 4096), 1), "passkey": ((1024, 2048, 4096), 1), "lm": ((1024, 2048, 4096, 8192), 2),
    "hotpotqa": ((1024, 2048, 4096), 5), "squad": ((1024, 2048, 4096), 5), "longbench": ((), None),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare configs on accuracy tasks (needle, passkey, lm, QA, LongBench)")
    p.add_argument("task", choices=TASKS, help="which task")
    p.add_argument("--configs", nargs="+", default=["origin"], help="preset names or YAML paths; the first is the "
                   "reference (all must share the model section)")
    p.add_argument("--lengths", nargs="+", type=int, help="context lengths in tokens (LongBench: one max length)")
    p.add_argument("--depths", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="needle depths in [0, 1] (needle, passkey)")
    p.add_argument("--samples", type=int, help="samples per length (and depth); LongBench: first N lines")
    p.add_argument("--seed", type=int, default=0, help="seed of every sample generator")
    p.add_argument("--out", type=Path, default=Path("eval/results"), help="results directory")
    p.add_argument("--variant", default="single", choices=VARIANTS,
                   help="needle variant")
    p.add_argument("--values", default="number", choices=VALUE_KINDS, help="needle values: 7 digits or UUIDs")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap prompts in the chat template (default: on for QA and LongBench, off for needles)")
    p.add_argument("--data", type=Path, help="LongBench <dataset>.jsonl")
    p.add_argument("--prompts", type=Path, help="LongBench dataset2prompt.json (for the paper's prompts)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def make_task(args: argparse.Namespace) -> Task:
    """The task the arguments describe, with per-task defaults filled in."""
    from sliminfer.core.errors import InputError

    lengths, samples = DEFAULTS[args.task]
    lengths = tuple(args.lengths or lengths)
    samples = args.samples if args.samples is not None else samples
    # measured on SmolLM2-135M-Instruct: needles answer best as a plain completion ("... The special
    # magic number for X is"), short-context QA best inside the chat template (SQuAD F1 10.5 vs 1.3)
    chat = args.chat if args.chat is not None else args.task in ("hotpotqa", "squad")
    if args.task == "needle":
        from sliminfer.eval.needles import NeedleTask

        return NeedleTask(args.variant, args.values, lengths, args.depths, samples, args.seed, chat)
    if args.task == "passkey":
        from sliminfer.eval.passkey import PasskeyTask

        return PasskeyTask(lengths, args.depths, samples, args.seed, chat)
    if args.task == "lm":
        from sliminfer.eval.lm_agreement import LMAgreementTask

        return LMAgreementTask(lengths, samples, args.seed)
    if args.task in ("hotpotqa", "squad"):
        from sliminfer.eval.qa import HotpotQATask, SquadTask

        return (HotpotQATask if args.task == "hotpotqa" else SquadTask)(lengths, samples, args.seed, chat)
    if args.data is None:
        raise InputError("longbench: give --data PATH to a LongBench <dataset>.jsonl")
    import json

    from sliminfer.eval.longbench import LongBenchTask

    prompts = json.loads(args.prompts.read_text(encoding="utf-8")) if args.prompts else None
    return LongBenchTask(args.data, samples, lengths[0] if lengths else None, prompts, args.chat is not False)


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
    return shlex.join(parts)


def _run(args: argparse.Namespace) -> int:
    from sliminfer.eval.report import metric_table, write_report
    from sliminfer.eval.runner import build_pipelines, resolve_configs, run_task

    configs = resolve_configs(args.configs)  # fails on a bad config before any weight loads
    task = make_task(args)
    pipes = build_pipelines(configs)
    records = run_task(task, configs, pipes, args.out, progress=not args.no_progress)
    paths = write_report(task, records, configs, args.out, command_line(args, task))
    print(metric_table(task, task.metrics[0], records, [c.name for c in configs]))
    print("\nwrote " + ", ".join(str(p) for p in [args.out / f"{task.name}.jsonl", *paths]))
    return 0
