"""A comparison as files: ``compare.md`` (the table and what it was measured on), ``compare.json`` (every
number, the bench points and the accuracy estimates included) and ``compare_pareto.png``.

Why a Pareto plot: the question is which configs are worth running, i.e. which are not beaten on
both axes by another; the plot marks those (lowest TTFT at the accuracy they keep) and draws each
row's bootstrap interval, so a "better" point inside another's interval reads as a tie.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sliminfer.compare.table import baseline_lines, render

SCHEMA = "sliminfer-compare/1"


def markdown(record: Mapping[str, Any]) -> str:
    """The report: how it was made, the one table, the stock baselines, notes, and the rows' configs."""
    speed, accuracy, summary = record.get("speed"), record.get("accuracy"), record["summary"]
    headers, rows, notes = render(summary, speed, accuracy)
    parts = ["# sliminfer compare", "", "Made by:", "", "```", record["command"], "```", ""]
    env = record["environment"]
    parts.append(f"sliminfer {env['sliminfer']}, torch {env['torch']}, transformers {env['transformers']}, "
                 f"{env['date']}.")
    if speed:
        m = speed["model"]
        s = speed["settings"]
        parts.append(f"Speed: {m['name']} shape [{m['label']}], {m['dtype']}, on {speed['environment']['device']}; "
                     f"medians of {s['repeats']} run(s) after {s['warmup']} warm-up; end to end = prompt + "
                     f"{s['new_tokens']} greedy tokens, the faster of the decode paths {', '.join(s['decoders'])}. "
                     f"x unpruned: against the row `{summary['unpruned'] or '(none timed)'}`; x best stock: against "
                     f"the fastest of the stock variants {', '.join(s['stock_modes']) or '(none timed)'}.")
    if accuracy:
        a = accuracy["settings"]
        parts.append(f"Accuracy: {accuracy['model']} (real weights), the same samples for every row, lengths "
                     f"{', '.join(map(str, a['lengths']))}; cells are mean % [{a['confidence']:.0%} percentile "
                     f"bootstrap interval, {a['resamples']} resamples, seed {a['seed']}]; kept %: prompt tokens kept "
                     "through the last layer on the accuracy side.")
    parts += ["", _markdown_table(headers, rows)]
    if summary["baselines"]:
        parts += ["", "Stock baselines:", "", *baseline_lines(summary)]
    if notes:
        parts += ["", "Notes:", "", *(f"{i}. {text}" for i, text in enumerate(notes, start=1))]
    parts += ["", "Rows:", ""]
    parts += [f"- `{r['name']}` ({r['digest']}): {r['describe']}" for r in record["rows"]]
    if accuracy:
        parts += ["", "Tasks:", ""]
        parts += [f"- {t['describe']} (score: {t['metric']})" for t in accuracy["tasks"].values()]
    return "\n".join(parts) + "\n"


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(record: Mapping[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (seconds, accuracy) that no other point beats: none is at least as fast and
    at least as accurate while better in one of the two. Ordered by time."""
    front = []
    for i, (t, a) in enumerate(points):
        beaten = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for j, (t2, a2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def pareto_plot(record: Mapping[str, Any], path: Path) -> Path | None:
    """Accuracy (the mean over tasks, with its interval) against TTFT, one panel per prompt length, the
    Pareto front joined. None, with a warning, when matplotlib is missing or no row has both numbers."""
    speed, accuracy, summary = record.get("speed"), record.get("accuracy"), record["summary"]
    if not speed or not accuracy:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("Pareto plot skipped: matplotlib is not installed (pip install matplotlib); the table and "
                      "the JSON are written", stacklevel=2)
        return None
    lengths = speed["settings"]["lengths"]
    series = {n: _plot_points(summary, n) for n in lengths}
    if not any(series.values()):
        warnings.warn("Pareto plot skipped: no row has both a TTFT and an accuracy", stacklevel=2)
        return None
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 4.4), squeeze=False)
    colors = {name: f"C{i % 10}" for i, name in enumerate(summary["rows"])}  # one color per row in every panel
    label = "mean accuracy over tasks (%)" if len(accuracy["tasks"]) > 1 else f"{next(iter(accuracy['tasks']))} (%)"
    for ax, n in zip(axes[0], lengths):
        pts = series[n]
        for name, t, est in pts:
            ax.errorbar([t], [est["mean"]], yerr=[[est["mean"] - est["low"]], [est["high"] - est["mean"]]],
                        fmt="o", capsize=3, color=colors[name])
            ax.annotate(name, (t, est["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front([(t, est["mean"]) for _, t, est in pts])
        if front:
            ax.plot([pts[i][1] for i in front], [pts[i][2]["mean"] for i in front], "--", color="gray",
                    label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(f"TTFT at {n} tokens (s, {speed['model']['name']}, random weights)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"accuracy on {accuracy['model']} vs time to first token", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_points(summary: Mapping[str, Any], n: int) -> list[tuple[str, float, Mapping[str, Any]]]:
    """(row, TTFT seconds, accuracy estimate) of the rows with both at length ``n``."""
    out = []
    for name, entry in summary["rows"].items():
        timed, scored = entry.get("speed"), entry.get("accuracy")
        if isinstance(timed, str) or isinstance(scored, str) or not timed or not scored:
            continue
        ttft = timed[n]["ttft"]
        estimate = scored["mean"]
        if ttft is not None and ttft.get("status") == "ok" and estimate:
            out.append((name, ttft["median_s"], estimate))
    return out
