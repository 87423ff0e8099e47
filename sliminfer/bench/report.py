"""A bench record as JSON, as printed tables (TTFT, then end-to-end) and as a PNG plot."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sliminfer.bench.stock import PREFILL_MODES, STOCK_MODES, best_measurement
from sliminfer.cli.format import table

GIB = 2**30
LABELS = {"stock": "stock", "stock_no_cudnn": "stock no-cuDNN", "stock_static": "stock static",
          "sliminfer": "sliminfer", "eager": "slim eager", "static": "slim static"}

STOCK_KEY = ("stock: generate as it comes | stock no-cuDNN: the same with cuDNN attention excluded (on CUDA) | "
             "stock static: static cache, compiled on CUDA | best stock: the fastest of those measured, "
             "the baseline of the 'vs best' columns")


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


@dataclass(frozen=True)
class Column:
    """One table column: its head, its cell for a (point, row) pair, and the modes it needs; a column
    whose modes were measured nowhere in the table is left out (a table shows what was run)."""

    head: str
    cell: Callable[[dict[str, Any], dict[str, Any]], str]
    needs: tuple[str, ...] = ()


def _measured(rows: Iterable[dict[str, Any]]) -> set[str]:
    """The modes measured in ``rows`` (keys holding a measurement), plus ``best_stock`` when one was picked."""
    out: set[str] = set()
    for row in rows:
        out |= {k for k, v in row.items() if isinstance(v, dict) and "status" in v}
        if row.get("best_stock"):
            out.add("best_stock")
    return out


def _render(columns: Sequence[Column], pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    measured = _measured(row for _, row in pairs)
    kept = [c for c in columns if set(c.needs) <= measured]
    return table([c.head for c in kept], [[c.cell(p, row) for c in kept] for p, row in pairs])


def _mode(mode: str, key: str = "median_s", digits: int = 3) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """The cell of ``row[mode][key]``: a number, its status (oom, error) or ``-``."""
    return lambda p, row: _seconds(row.get(mode), key, digits=digits)


def _speedup(key: str, within: str | None = None) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """The cell of ``row[key]`` (or ``row[within][key]``, e.g. within ``speedup``) as ``1.23x``."""
    def cell(p: dict[str, Any], row: dict[str, Any]) -> str:
        source = (row.get(within) or {}) if within else row
        return _x(source.get(key))

    return cell


def _best_name(p: dict[str, Any], row: dict[str, Any]) -> str:
    return row.get("best_stock") or "-"


TTFT_COLUMNS = (
    Column("prompt", lambda p, t: str(p["prompt_tokens"])),
    *(Column(f"{LABELS[m]} TTFT s", _mode(m), (m,)) for m in PREFILL_MODES),
    Column("slim TTFT s", _mode("sliminfer"), ("sliminfer",)),
    Column("x vs stock", _speedup("speedup"), ("stock", "sliminfer")),
    Column("best stock", _best_name, ("best_stock",)),
    Column("best stock TTFT s", lambda p, t: _seconds(best_measurement(t)), ("best_stock",)),
    Column("x vs best", _speedup("speedup_vs_best_stock"), ("best_stock", "sliminfer")),
    Column("FLOP model", lambda p, t: _x(p["flops"]["ratio"])),
    Column("KV saved", lambda p, t: "-" if p.get("kv_saved") is None else f"{p['kv_saved']:.1%}", ("sliminfer",)),
    Column("stock peak GiB", lambda p, t: _gib(t.get("stock")), ("stock",)),
    Column("slim peak GiB", lambda p, t: _gib(t.get("sliminfer")), ("sliminfer",)),
)

E2E_COLUMNS = (
    Column("prompt", lambda p, e: str(p["prompt_tokens"])),
    Column("new", lambda p, e: str(e["new_tokens"])),
    *(Column(f"{LABELS[m]} s", _mode(m), (m,)) for m in (*STOCK_MODES, "eager", "static")),
    Column("best stock", _best_name, ("best_stock",)),
    Column("x eager", _speedup("eager", "speedup"), ("stock", "eager")),
    Column("x static", _speedup("static", "speedup"), ("stock", "static")),
    Column("x eager vs best", _speedup("eager_vs_best_stock", "speedup"), ("best_stock", "eager")),
    Column("x static vs best", _speedup("static_vs_best_stock", "speedup"), ("best_stock", "static")),
    *(Column(f"{LABELS[m]} ms/tok", _mode(m, "decode_ms_per_token", 1), (m,)) for m in (*STOCK_MODES, "eager")),
    Column("slim static ms/tok", _mode("static", "decode_ms_per_token", 2), ("static",)),
    Column("slim static GB/s", lambda p, e: _rate(e.get("achieved_gb_per_s", {}).get("static")), ("static",)),
    Column("static / floor", lambda p, e: _over_floor(e), ("static",)),
    Column("floor ms/tok slim/stock",
           lambda p, e: f"{e['floor_ms_per_token']['sliminfer']:.3g} / {e['floor_ms_per_token']['stock']:.3g}"),
    Column("stock peak GiB", lambda p, e: _gib(e.get("stock")), ("stock",)),
    Column("slim static peak GiB", lambda p, e: _gib(e.get("static")), ("static",)),
    Column("static=eager", lambda p, e: _share(e.get("static_matches_eager_tokens")), ("eager", "static")),
)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _over_floor(row: dict[str, Any]) -> str:
    """The static decode's ms/token as a multiple of the floor's (1.00x: at the bandwidth floor)."""
    ms = (row.get("static") or {}).get("decode_ms_per_token")
    return "-" if not ms else f"{ms / row['floor_ms_per_token']['sliminfer']:.2f}x"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def ttft_table(points: Sequence[dict[str, Any]]) -> str:
    """TTFT per prompt length: each stock variant with a prefill, sliminfer, and its speedups."""
    return _render(TTFT_COLUMNS, [(p, p["ttft"]) for p in points if p.get("ttft")])


def e2e_table(points: Sequence[dict[str, Any]]) -> str:
    """End to end per (prompt, new tokens): seconds and ms/token of every measured path, the best stock,
    speedups against plain stock and against the best stock, floors, memory, token agreement."""
    return _render(E2E_COLUMNS, [(p, e) for p in points for e in p.get("e2e", [])])


def summary(record: dict[str, Any]) -> str:
    """Both tables under a one-line header (device, model, label, versions) and a key to the stock
    variants (what "best stock" chose among)."""
    m = record["model"]
    head = (f"{m['name']} [{m['label']}] {m['dtype']} on {record['device']} | torch {record['torch']}, "
            f"transformers {record['transformers']} | {record['date']}")
    parts = [head]
    if set(record.get("settings", {}).get("modes", STOCK_MODES)) & set(STOCK_MODES):
        parts.append(STOCK_KEY)
    points = sorted(record["points"], key=lambda p: p["prompt_tokens"])
    if any(p.get("ttft") for p in points):
        parts += ["", "Time to first token (median)", ttft_table(points)]
    rows = [e for p in points for e in p.get("e2e", [])]
    if rows:
        floor = rows[0]["floor_ms_per_token"]
        source = "" if floor.get("bandwidth_source", "given") == "given" else f", {floor['bandwidth_source']}"
        parts += ["", f"End to end (median; floor = weights + KV read per token at "
                      f"{floor['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s{source})",
                  e2e_table(points)]
    return "\n".join(parts)


def plot(record: dict[str, Any], path: str | Path) -> Path | None:
    """TTFT and end-to-end latency against prompt length, every measured mode, each panel titled with
    its baseline (the best stock); None when matplotlib is not installed, with a Python warning (the
    caller can fix that, so it is a warning rather than a log record: scripts show it without any setup)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("plot skipped: matplotlib is not installed (pip install matplotlib)", stacklevel=2)
        return None
    points = sorted(record["points"], key=lambda p: p["prompt_tokens"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    ttfts = [p["ttft"] for p in points if p.get("ttft")]
    _lines(left, points, [(LABELS[k], lambda p, k=k: (p.get("ttft") or {}).get(k))
                          for k in (*PREFILL_MODES, "sliminfer")])
    left.set_title(f"time to first token\n{_baseline(ttfts)}", fontsize=10)
    rows = [e for p in points for e in p.get("e2e", [])]
    series = []
    for new in sorted({e["new_tokens"] for e in rows}):
        for key in (*STOCK_MODES, "eager", "static"):
            series.append((f"{LABELS[key]}, {new} new", lambda p, k=key, n=new: next(
                (e.get(k) for e in p.get("e2e", []) if e["new_tokens"] == n), None)))
    _lines(right, points, series)
    right.set_title(f"end-to-end latency\n{_baseline(rows)}", fontsize=10)
    m = record["model"]
    fig.suptitle(f"{m['name']} ({m['label']}), {m['dtype']}, {record['device']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _baseline(rows: Sequence[dict[str, Any]]) -> str:
    """Which stock the speedups are against: the best stock of the rows (several when it changes)."""
    names = list(dict.fromkeys(r["best_stock"] for r in rows if r.get("best_stock")))
    return f"baseline (best stock): {' / '.join(LABELS.get(n, n) for n in names)}" if names else "no stock measured"


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
