"""The accuracy side of a comparison: the eval harness's tasks on the real model, every row on the
same samples, each task's mean with a bootstrap interval.

Why through the eval runner: it builds each task's samples once (fixed seeds), runs every config on
each sample, appends every answer to ``<out>/<task>.jsonl`` at once and skips finished pairs on a
re-run; a comparison is one more reader of those records. ``samples`` counts samples per (task, row),
spread evenly over the task's grid (lengths, and depths for needle and passkey), rounded up to whole
cells; the count actually run is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sliminfer.compare.rows import on_model, pipeline_or_reason
from sliminfer.core.config import ModelSection
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.prompts import check_length
from sliminfer.eval.base import GenerationTask, Record, Task
from sliminfer.eval.bootstrap import bootstrap_mean
from sliminfer.eval.report import markdown
from sliminfer.eval.runner import EvalConfig, run_task
from sliminfer.eval.tasks import DEPTHS, build_task

#: tasks whose first metric is a per-sample score in [0, 1] (what an accuracy column and a bootstrap need)
TASKS = ("needle", "needle_multikey", "needle_multivalue", "needle_multiquery", "passkey", "hotpotqa", "squad")
#: tasks with a depth axis: their grid is lengths x depths
_DEPTH_TASKS = frozenset({"needle", "needle_multikey", "needle_multivalue", "needle_multiquery", "passkey"})


@dataclass
class AccuracySettings:
    """What the accuracy side runs: ``tasks`` over ``lengths`` (x ``depths``), ``samples`` per (task, row),
    on ``model`` (a ``model.source``: the default model's name or a local checkpoint)."""

    tasks: tuple[str, ...] = ("needle", "passkey")
    samples: int = 20
    lengths: tuple[int, ...] = (1024, 2048, 4096)
    depths: tuple[float, ...] = DEPTHS
    model: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    resamples: int = 1000
    confidence: float = 0.95

    def check(self) -> None:
        """Refuse settings that cannot run, before any weight loads."""
        if self.samples < 1:
            raise ConfigError("--samples", self.samples, "must be at least 1 sample per task and config")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ConfigError("--tasks", list(self.tasks), f"choose one or more of {', '.join(TASKS)}")
        if not self.lengths or any(n < 1 for n in self.lengths):
            raise ConfigError("--accuracy-lengths", list(self.lengths), "give at least one positive length")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError("--depths", list(self.depths), "give at least one depth in [0, 1]")

    @property
    def section(self) -> ModelSection:
        return ModelSection(source=self.model, device=self.device, dtype=self.dtype)

    def per_cell(self, task: str) -> int:
        """Samples per grid cell of ``task`` so that a row gets at least ``samples`` in all."""
        cells = len(self.lengths) * (len(self.depths) if task in _DEPTH_TASKS else 1)
        return math.ceil(self.samples / cells)

    def build(self, task: str) -> Task:
        base, _, variant = task.partition("_")
        return build_task(base, lengths=self.lengths, samples=self.per_cell(task), seed=self.seed,
                          depths=self.depths, variant=variant or "single")


def run_accuracy(rows: Sequence[EvalConfig], settings: AccuracySettings, out_dir: Path, progress: bool = True,
                 model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Run every task for every row that applies to the model; ``model``/``tokenizer`` default to
    loading ``settings.model``.

    Returns ``{"model", "settings", "tasks": {task: {"describe", "metric", "rows": {name: summary}}},
    "rows": {name: {"status": "ok", "mean": estimate} or {"status": "n/a", "reason"}}}``, where a summary
    holds the task's estimate in percent (mean, 95 % interval, n) and the share of prompt tokens the
    row kept through the last layer.
    """
    settings.check()
    tasks = [settings.build(t) for t in settings.tasks]
    section = settings.section
    if model is None:
        from sliminfer.core.loading import load_model

        model, tokenizer = load_model(section)
    side = f"{settings.model} (accuracy)"
    configs, pipes, result_rows = [], [], {}
    for row in rows:
        placed = on_model(row, section)
        pipe = pipeline_or_reason(model, tokenizer, placed, side)
        if isinstance(pipe, str):
            result_rows[row.name] = {"status": "n/a", "reason": pipe}
        else:
            configs.append(placed)
            pipes.append(pipe)
            result_rows[row.name] = {"status": "ok"}
    out: dict[str, Any] = {"model": settings.model, "settings": asdict(settings), "tasks": {}, "rows": result_rows}
    if not pipes:
        return out
    for task in tasks:
        _check_fits(task, settings, pipes[0].adapter.max_positions)
    groups: dict[str, list[list[float]]] = {c.name: [] for c in configs}
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        records = run_task(task, configs, pipes, out_dir, progress)
        (out_dir / f"{task.name}.md").write_text(markdown(task, records, configs), encoding="utf-8")
        out["tasks"][task.name], scores = _task_summary(task, records, configs, settings)
        for name, values in groups.items():
            values.append(scores[name])
    for name, values in groups.items():
        result_rows[name]["mean"] = _estimate(values, settings)
    return out


def _check_fits(task: Task, settings: AccuracySettings, max_positions: int) -> None:
    """Every length plus the task's answer tokens must fit the model, before any sample is built."""
    new = task.max_new_tokens if isinstance(task, GenerationTask) else 1
    try:
        check_length(max(settings.lengths), new, max_positions)
    except InputError as exc:
        raise ConfigError("--accuracy-lengths", max(settings.lengths),
                          f"does not fit {settings.model} with {task.name}'s {new} answer tokens ({exc})") from None


def _task_summary(task: Task, records: Sequence[Record], configs: Sequence[EvalConfig],
                  settings: AccuracySettings) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The task's summary for the record, and each config's per-sample scores."""
    metric = task.metrics[0]
    rows: dict[str, Any] = {}
    scores: dict[str, list[float]] = {}
    for config in configs:
        mine = [r for r in records if r["config"] == config.name]
        scores[config.name] = [float(r[metric.name]) for r in mine]
        kept = [r["kept_tokens"] / r["prompt_tokens"] for r in mine if r.get("prompt_tokens")]
        rows[config.name] = {"estimate": _estimate([scores[config.name]], settings),
                             "kept_share": sum(kept) / len(kept) if kept else None}
    return {"describe": task.describe(), "metric": metric.label, "field": metric.name, "rows": rows}, scores


def _estimate(groups: Sequence[Sequence[float]], settings: AccuracySettings) -> dict[str, Any]:
    """A bootstrap estimate in percent, as a dict."""
    return bootstrap_mean(groups, settings.resamples, settings.confidence, settings.seed).scaled(100.0).to_dict()

