"""A bench record as JSON, as printed tables (TTFT, then end-to-end) and as a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sliminfer.cli.format import table

GIB = 2**30


def write_json(record: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def _seconds(m: dict[str, Any] | None, key: str = "median_s", scale: float = 1.0, digits: int = 3) -> str:
    if not m:
        return "-"
    if m.get("status", "ok") != "ok":
        return str(m["status"])
    value = m.get(key)
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _gib(m: dict[str, Any] | None) -> str:
    if not m or m.get("status") != "ok" or m.get("peak_bytes") is None:
        return "-"
    return f"{m['peak_bytes'] / GIB:.1f}"


def ttft_table(points: Sequence[dict[str, Any]]) -> str:
    rows = []
    for p in points:
        t = p.get("ttft")
        if not t:
            continue
        saved = p.get("kv_saved")
        rows.append([p["prompt_tokens"], _seconds(t.get("stock")), _seconds(t.get("sliminfer")), _x(t.get("speedup")),
                     _x(p["flops"]["ratio"]), "-" if saved is None else f"{saved:.1%}",
                     _gib(t.get("stock")), _gib(t.get("sliminfer"))])
    return table(["prompt", "stock TTFT s", "slim TTFT s", "speedup", "FLOP model", "KV saved",
                  "stock peak GiB", "slim peak GiB"], rows)


def e2e_table(points: Sequence[dict[str, Any]]) -> str:
    rows = []
    static = any("stock_static" in e for p in points for e in p.get("e2e", []))
    for p in points:
        for e in p.get("e2e", []):
            floor = e["floor_ms_per_token"]
            agree = e.get("static_matches_eager_tokens")
            row = [p["prompt_tokens"], e["new_tokens"], _seconds(e.get("stock"))]
            if static:
                row.append(_seconds(e.get("stock_static")))
            row += [_seconds(e.get("eager")), _seconds(e.get("static")),
                    _x(e["speedup"].get("eager")), _x(e["speedup"].get("static"))]
            if static:
                row.append(_x(e["speedup"].get("static_vs_stock_static")))
            row.append(_seconds(e.get("stock"), "decode_ms_per_token", digits=1))
            if static:
                row.append(_seconds(e.get("stock_static"), "decode_ms_per_token", digits=1))
            row += [_seconds(e.get("eager"), "decode_ms_per_token", digits=1),
                    _seconds(e.get("static"), "decode_ms_per_token", digits=2),
                    f"{floor['sliminfer']:.3g} / {floor['stock']:.3g}",
                    _gib(e.get("stock")), _gib(e.get("static")),
                    "-" if agree is None else f"{agree:.0%}"]
            rows.append(row)
    head = ["prompt", "new", "stock s"] + (["stock static s"] if static else []) + [
        "slim eager s", "slim static s", "x eager", "x static"] + (["x static vs stock static"] if static else []) + [
        "stock ms/tok"] + (["stock static ms/tok"] if static else []) + [
        "slim eager ms/tok", "slim static ms/tok", "floor ms/tok slim/stock", "stock peak GiB", "slim static peak GiB",
        "static=eager"]
    return table(head, rows)


def summary(record: dict[str, Any]) -> str:
    """Both tables under a one-line header (device, model, label, versions)."""
    m = record["model"]
    head = (f"{m['name']} [{m['label']}] {m['dtype']} on {record['device']} | torch {record['torch']}, "
            f"transformers {record['transformers']} | {record['date']}")
    parts = [head]
    points = sorted(record["points"], key=lambda p: p["prompt_tokens"])
    if any(p.get("ttft") for p in points):
        parts += ["", "Time to first token (median)", ttft_table(points)]
    rows = [e for p in points for e in p.get("e2e", [])]
    if rows:
        bw = rows[0]["floor_ms_per_token"]["bandwidth_bytes_per_s"] / 1e12
        parts += ["", f"End to end (median; floor = weights + KV read per token at {bw:.2f} TB/s)",
                  e2e_table(points)]
    return "\n".join(parts)


def plot(record: dict[str, Any], path: str | Path) -> Path | None:
    """TTFT and end-to-end latency against prompt length, both modes; None (with a message on
    stdout) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)")
        return None
    points = sorted(record["points"], key=lambda p: p["prompt_tokens"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    _lines(left, points, [("stock", lambda p: (p.get("ttft") or {}).get("stock")),
                          ("sliminfer", lambda p: (p.get("ttft") or {}).get("sliminfer"))])
    left.set_title("time to first token")
    news = sorted({e["new_tokens"] for p in points for e in p.get("e2e", [])})
    series = []
    for new in news:
        for key, label in (("stock", "stock generate"), ("stock_static", "stock static + compile"),
                           ("eager", "sliminfer eager"), ("static", "sliminfer static")):
            series.append((f"{label}, {new} new", lambda p, k=key, n=new: next(
                (e.get(k) for e in p.get("e2e", []) if e["new_tokens"] == n), None)))
    _lines(right, points, series)
    right.set_title("end-to-end latency")
    m = record["model"]
    fig.suptitle(f"{m['name']} ({m['label']}), {m['dtype']}, {record['device']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _lines(ax: Any, points: Sequence[dict[str, Any]], series: Sequence[tuple[str, Any]]) -> None:
    for label, pick in series:
        xs, ys = [], []
        for p in points:
            m = pick(p)
            if m and m.get("status") == "ok":
                xs.append(p["prompt_tokens"])
                ys.append(m["median_s"])
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("seconds")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sliminfer.bench.report RECORD.json [PLOT.png]``: print a saved record's tables and
    draw its plot again (for a run made where matplotlib was missing)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) > 2:
        print("usage: python -m sliminfer.bench.report RECORD.json [PLOT.png]")
        return 2
    record = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    target = Path(args[1]) if len(args) > 1 else Path(args[0]).with_suffix(".png")
    if plot(record, target) is not None:
        print(f"wrote {target}")
    print(summary(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
