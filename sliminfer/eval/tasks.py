"""The eval harness's tasks by name, with the defaults ``sliminfer eval`` and ``sliminfer compare`` use.

Why one builder: both commands must build a task the same way from the same few settings, or the two
would score differently under the same name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sliminfer.core.errors import ConfigError, InputError
from sliminfer.eval.base import Task

TASKS = ("needle", "passkey", "lm", "hotpotqa", "squad", "longbench")
#: (lengths, samples) per task when not given on the command line
DEFAULTS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "needle": ((1024, 2048, 4096), 1), "passkey": ((1024, 2048, 4096), 1), "lm": ((1024, 2048, 4096, 8192), 2),
    "hotpotqa": ((1024, 2048, 4096), 5), "squad": ((1024, 2048, 4096), 5), "longbench": ((), None),
}
#: needle and passkey depths when not given
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def build_task(name: str, lengths: Sequence[int] | None = None, samples: int | None = None, seed: int = 0,
               depths: Sequence[float] = DEPTHS, variant: str = "single", values: str = "number",
               chat: bool | None = None, data: Path | None = None, prompts: Path | None = None) -> Task:
    """Task ``name`` (one of :data:`TASKS`); None for lengths, samples or chat means the task's default.

    ``samples`` is per length (and depth, for needle and passkey); for LongBench, the first N lines.
    """
    if name not in TASKS:
        raise ConfigError("task", name, f"choose from {', '.join(TASKS)}")
    default_lengths, default_samples = DEFAULTS[name]
    lengths = tuple(lengths or default_lengths)
    samples = samples if samples is not None else default_samples
    # measured on SmolLM2-135M-Instruct: needles answer best as a plain completion ("... The special
    # magic number for X is"), short-context QA best inside the chat template (SQuAD F1 10.5 vs 1.3)
    chat_template = chat if chat is not None else name in ("hotpotqa", "squad")
    if name == "needle":
        from sliminfer.eval.needles import NeedleTask

        return NeedleTask(variant, values, lengths, depths, samples, seed, chat_template)
    if name == "passkey":
        from sliminfer.eval.passkey import PasskeyTask

        return PasskeyTask(lengths, depths, samples, seed, chat_template)
    if name == "lm":
        from sliminfer.eval.lm_agreement import LMAgreementTask

        return LMAgreementTask(lengths, samples, seed)
    if name in ("hotpotqa", "squad"):
        from sliminfer.eval.qa import HotpotQATask, SquadTask

        return (HotpotQATask if name == "hotpotqa" else SquadTask)(lengths, samples, seed, chat_template)
    if data is None:
        raise InputError("longbench: give --data PATH to a LongBench <dataset>.jsonl")
    from sliminfer.eval.longbench import LongBenchTask

    prompt_map = json.loads(prompts.read_text(encoding="utf-8")) if prompts else None
    return LongBenchTask(data, samples, lengths[0] if lengths else None, prompt_map, chat is not False)
