"""Markdown tables and PNG plots of a task's records, configs side by side.

Why side by side with deltas: the question every table answers is "does this config keep the
reference's answers?", so each non-reference cell carries its difference to the reference (points,
or a relative change for perplexity) and the sample count is always shown next to it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sliminfer.eval.base import Metric, Record, Task
from sliminfer.eval.runner import EvalConfig

Group = tuple[object, ...]


def group_records(records: Sequence[Record], fields: Sequence[str]) -> dict[Group, dict[str, list[Record]]]:
    """``{row values: {config: records}}``, rows in sorted order."""
    groups: dict[Group, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[tuple(r.get(f) for f in fields)][r["config"]].append(r)
    return dict(sorted(groups.items(), key=lambda item: [str(v) if not isinstance(v, (int, float)) else v
                                                             for v in item[0]]))


def _cell(metric: Metric, value: float, reference: float | None) -> str:
    if math.isnan(value):
        return "-"
    text = f"{value:.2f}" if metric.relative else f"{value:.1f}"
    if reference is None or math.isnan(reference):
        return text
    if metric.relative:
        return f"{text} ({(value / reference - 1) * 100:+.1f}%)" if reference else text
    return f"{text} ({value - reference:+.1f})"


def metric_table(task: Task, metric: Metric, records: Sequence[Record], names: Sequence[str]) -> str:
    """Rows = ``task.rows`` values plus an 'all' row; one column per config."""
    head = [*task.rows, "n", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = list(group_records(records, task.rows).items())
    rows.append((("all",) * len(task.rows), _by_config(records)))
    for key, by_config in rows:
        values = [metric.aggregate(by_config.get(n, [])) for n in names]
        n = len(by_config.get(names[0], []))
        cells = [_cell(metric, v, values[0] if i else None) for i, v in enumerate(values)]
        lines.append("| " + " | ".join([*map(str, key), str(n), *cells]) + " |")
    return "\n".join(lines)


def _by_config(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        out[r["config"]].append(r)
    return out


def grid(task: Task, metric: Metric, records: Sequence[Record]) -> tuple[list[object], list[object], list[list[float]]]:
    """(x values, y values, ``values[y][x]``) of a heatmap for one config's records."""
    x_field, y_field = task.heatmap or ("length", "depth")
    xs = sorted({r[x_field] for r in records})
    ys = sorted({r[y_field] for r in records})
    cells = group_records(records, (y_field, x_field))
    return xs, ys, [[metric.aggregate(sum(cells.get((y, x), {}).values(), [])) for x in xs] for y in ys]


def grid_table(task: Task, metric: Metric, records: Sequence[Record]) -> str:
    xs, ys, values = grid(task, metric, records)
    x_field, y_field = task.heatmap or ("length", "depth")
    lines = [f"| {y_field} \\ {x_field} | " + " | ".join(map(str, xs)) + " |", "|" + "---|" * (len(xs) + 1)]
    for y, row in zip(ys, values):
        lines.append(f"| {y} | " + " | ".join("-" if math.isnan(v) else f"{v:.0f}" for v in row) + " |")
    return "\n".join(lines)


def markdown(task: Task, records: Sequence[Record], configs: Sequence[EvalConfig], command: str = "") -> str:
    names = [c.name for c in configs]
    per_config = _by_config(records)
    parts = [f"# {task.name}", "", task.describe(), ""]
    if command:
        parts += ["Made by:", "", "```", command, "```", ""]
    parts += ["Configs (the first is the reference for deltas and agreement):", ""]
    parts += [f"- `{c.name}` ({c.digest}, {len(per_config.get(c.name, []))} records): {c.describe()}" for c in configs]
    for metric in task.metrics:
        parts += ["", f"## {metric.label}", "", metric_table(task, metric, records, names)]
    if task.heatmap:
        main = task.metrics[0]
        for name in names:
            parts += ["", f"## {main.label}: `{name}`", "", grid_table(task, main, per_config.get(name, []))]
    differences = difference_table(task, records, names)
    if differences:
        parts += ["", "## Samples where a config scores differently from the reference", "", differences]
    return "\n".join(parts) + "\n"


def difference_table(task: Task, records: Sequence[Record], names: Sequence[str], limit: int = 40) -> str:
    """Per-sample rows where a config's main score differs from the reference's, with its answer and
    the layer after which the answer's prompt tokens were pruned (where tracked)."""
    field = task.metrics[0].name
    reference = {r["sample_id"]: r for r in records if r["config"] == names[0]}
    rows = []
    for r in records:
        ref = reference.get(r["sample_id"])
        if r["config"] == names[0] or ref is None or "prediction" not in r or r.get(field) == ref.get(field):
            continue
        cells = [r["config"], r["key"], f"{100 * ref[field]:.0f}", f"{100 * r[field]:.0f}",
                 _quote(ref["prediction"]), _quote(r["prediction"]), str(r.get("evidence_dropped_after", "-"))]
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = ["config", "sample", f"reference {field}", field, "reference answer", "answer", "evidence pruned after layer"]
    more = [f"\n({len(rows) - limit} more rows in the jsonl)"] if len(rows) > limit else []
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows[:limit], *more])


def _quote(text: str, width: int = 60) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text[:width]}`" if text else "(empty)"


def plots(task: Task, records: Sequence[Record], names: Sequence[str], out_dir: Path) -> list[Path]:
    """A heatmap per config (tasks with a depth axis) or one line plot per metric against length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_config = _by_config(records)
    paths: list[Path] = []
    if task.heatmap:
        metric = task.metrics[0]
        for name in names:
            xs, ys, values = grid(task, metric, per_config.get(name, []))
            if not xs:
                continue
            fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.5 * len(ys) + 2))
            image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
            ax.set_yticks(range(len(ys)), [str(y) for y in ys])
            ax.set_xlabel(f"context {task.heatmap[0]} (tokens)")
            ax.set_ylabel(f"needle {task.heatmap[1]}")
            for i, row in enumerate(values):
                for j, v in enumerate(row):
                    ax.text(j, i, "-" if math.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=8)
            ax.set_title(f"{task.name}: {name}")
            fig.colorbar(image, ax=ax, label=metric.label)
            paths.append(_save(fig, out_dir / f"{task.name}_{name}_heatmap.png"))
            plt.close(fig)
    elif "length" in task.rows:
        metrics = task.metrics
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for name in names:
                rows = group_records(per_config.get(name, []), ("length",))
                xs = list(rows)
                ax.plot([x[0] for x in xs], [metric.aggregate(rows[x][name]) for x in xs], marker="o", label=name)
            ax.set_xscale("log", base=2)
            lengths = sorted({r["length"] for r in records})
            ax.set_xticks(lengths, [str(x) for x in lengths])
            ax.minorticks_off()
            ax.set_xlabel("context length (tokens)")
            ax.set_title(metric.label, fontsize=8)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(task.name)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / f"{task.name}.png"))
        plt.close(fig)
    return paths


def _save(fig: object, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_report(task: Task, records: Sequence[Record], configs: Sequence[EvalConfig], out_dir: Path,
                 command: str = "") -> list[Path]:
    """``<task>.md`` and the PNGs; returns their paths."""
    md = out_dir / f"{task.name}.md"
    md.write_text(markdown(task, records, configs, command), encoding="utf-8")
    return [md, *plots(task, records, [c.name for c in configs], out_dir)]
