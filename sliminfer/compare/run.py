"""One comparison run: both sides (or one), the summary, and the files.

Every setting is checked before any model is built, so a bad flag fails in a second, not after the
speed side has run for minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sliminfer.bench.run import environment
from sliminfer.compare.accuracy import AccuracySettings, run_accuracy
from sliminfer.compare.report import SCHEMA, markdown, pareto_plot, write_json
from sliminfer.compare.speed import SpeedSettings, run_speed
from sliminfer.compare.table import summarize
from sliminfer.core.errors import ConfigError
from sliminfer.core.loading import resolve_device
from sliminfer.eval.runner import EvalConfig

MARKDOWN, JSON, PLOT = "compare.md", "compare.json", "compare_pareto.png"


def run_compare(rows: Sequence[EvalConfig], speed: SpeedSettings | None, accuracy: AccuracySettings | None,
                out_dir: Path, command: str = "", progress: bool = True, plot: bool = True,
                ) -> tuple[dict[str, Any], list[Path]]:
    """Run the sides that have settings and write ``compare.md``, ``compare.json`` and (with matplotlib,
    both sides, ``plot``) ``compare_pareto.png`` under ``out_dir``; accuracy records go to
    ``out_dir/accuracy/``. Returns the record and the paths written."""
    if speed is None and accuracy is None:
        raise ConfigError("--speed-only/--accuracy-only", "both", "leave at least one side to run")
    if not rows:
        raise ConfigError("CONFIG", [], "give at least one config (preset name or YAML path)")
    for settings in (speed, accuracy):
        if settings is not None:
            settings.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    speed_result = run_speed(rows, speed, progress) if speed else None
    accuracy_result = run_accuracy(rows, accuracy, out_dir / "accuracy", progress) if accuracy else None
    device = resolve_device((speed or accuracy).device)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command,
        "environment": environment(device),
        "rows": [{"name": r.name, "digest": r.digest, "describe": r.describe(),
                  "config": r.config.model_dump(mode="json")} for r in rows],
        "speed": speed_result,
        "accuracy": accuracy_result,
        "summary": summarize(rows, speed_result, accuracy_result),
    }
    md = out_dir / MARKDOWN
    md.write_text(markdown(record), encoding="utf-8")
    paths = [md, write_json(record, out_dir / JSON)]
    png = pareto_plot(record, out_dir / PLOT) if plot else None
    if png is not None:
        paths.append(png)
    return record, paths
