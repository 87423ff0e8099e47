"""The comparison's one table: per row, the numbers of both sides, then those numbers as cells.

Why two steps: the JSON keeps the numbers (:func:`summarize`), the markdown shows them (:func:`render`),
and both come from the same derivation, so a speedup is computed in one place: a row's median over
the unpruned row's and over the best stock variant's (:func:`~sliminfer.bench.measure.ratio`, with the
best stock picked by the bench's :func:`~sliminfer.bench.stock.best_stock`). A row's end-to-end time is
its faster measured decode path (:func:`fastest_decode`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sliminfer.bench.grid import DECODERS
from sliminfer.bench.measure import all_ok, ratio
from sliminfer.bench.stock import best_measurement, best_stock
from sliminfer.compare.rows import is_unpruned
from sliminfer.eval.runner import EvalConfig

GIB = 2**30
Measurement = Mapping[str, Any]


def fastest_decode(e2e: Mapping[str, Any] | None) -> tuple[str | None, Measurement | None]:
    """The decode path of a bench end-to-end row with the lowest median among those that ran OK; if none
    ran OK, the first one measured (whose status says why); ``(None, None)`` if none was measured."""
    if not e2e:
        return None, None
    measured = [(d, e2e[d]) for d in DECODERS if isinstance(e2e.get(d), Mapping)]
    ok = [(d, m) for d, m in measured if all_ok(m)]
    if ok:
        return min(ok, key=lambda item: item[1]["median_s"])
    return measured[0] if measured else (None, None)


def best_stock_ttft(stock: Mapping[str, Any] | None) -> tuple[str | None, Measurement | None]:
    """The best stock variant's TTFT at one length: from the stock prefills timed there, else from the
    TTFTs the stock variants' end-to-end runs measured (``stock_static`` is timed only that way: a
    one-token ``generate`` with its static cache), so a run of ``--stock stock_static`` has a baseline too."""
    if stock is None:
        return None, None
    best = best_measurement(stock["ttft"])
    if best is not None:
        return stock["ttft"]["best_stock"], best
    e2e = stock["e2e"][0] if stock.get("e2e") else {}
    timed = {m: {"status": "ok", "median_s": r["ttft_s"]} for m, r in e2e.items()
             if isinstance(r, Mapping) and all_ok(r) and r.get("ttft_s") is not None}
    name = best_stock(timed)  # the bench's rule: the lowest median among the stock variants
    return (name, timed[name]) if name else (None, None)


def _length_summary(point: Mapping[str, Any], stock: Mapping[str, Any] | None,
                    unpruned: Mapping[str, Any] | None) -> dict[str, Any]:
    ttft = point["ttft"].get("sliminfer")
    decoder, e2e = fastest_decode(point["e2e"][0] if point.get("e2e") else None)
    stock_e2e = stock["e2e"][0] if stock and stock.get("e2e") else None
    unpruned_e2e = fastest_decode(unpruned["e2e"][0] if unpruned and unpruned.get("e2e") else None)[1]
    return {
        "ttft": ttft,
        "ttft_x_unpruned": ratio(unpruned["ttft"].get("sliminfer"), ttft) if unpruned else None,
        "ttft_x_best_stock": ratio(best_stock_ttft(stock)[1], ttft),
        "e2e_decoder": decoder,
        "e2e": e2e,
        "e2e_x_unpruned": ratio(unpruned_e2e, e2e),
        "e2e_x_best_stock": ratio(best_measurement(stock_e2e), e2e) if stock_e2e else None,
        "kv_bytes": point.get("kv_bytes"),
        "full_kv_bytes": point.get("full_kv_bytes"),
    }


def unpruned_row(rows: Sequence[EvalConfig], speed: Mapping[str, Any] | None) -> str | None:
    """The first row that runs unpruned (and was timed): the baseline of the 'x unpruned' columns."""
    for row in rows:
        if is_unpruned(row.config) and (speed is None or speed["rows"][row.name]["status"] == "ok"):
            return row.name
    return None


def summarize(rows: Sequence[EvalConfig], speed: Mapping[str, Any] | None,
              accuracy: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"unpruned": name, "baselines": {length: ...}, "rows": {name: {"speed": {length: ...} | reason,
    "accuracy": {...} | reason}}}`` with the numbers of the table (speedups as ratios, bytes, estimates)."""
    baseline = unpruned_row(rows, speed)
    out: dict[str, Any] = {"unpruned": baseline, "baselines": {}, "rows": {}}
    stock_points = {p["prompt_tokens"]: p for p in (speed or {}).get("stock") or []}
    for n, point in stock_points.items():
        e2e = point["e2e"][0] if point.get("e2e") else {}
        ttft_name, ttft = best_stock_ttft(point)
        out["baselines"][n] = {"ttft_best_stock": ttft_name, "ttft": ttft,
                               "e2e_best_stock": e2e.get("best_stock"), "e2e": best_measurement(e2e) if e2e else None}
    base_points = {}
    if speed is not None and baseline is not None:
        base_points = {p["prompt_tokens"]: p for p in speed["rows"][baseline]["points"]}
    for row in rows:
        entry: dict[str, Any] = {}
        if speed is not None:
            timed = speed["rows"][row.name]
            entry["speed"] = timed.get("reason") or {
                p["prompt_tokens"]: _length_summary(p, stock_points.get(p["prompt_tokens"]),
                                                    base_points.get(p["prompt_tokens"]))
                for p in timed["points"]}
        if accuracy is not None:
            scored = accuracy["rows"][row.name]
            entry["accuracy"] = scored.get("reason") or {
                "tasks": {t: s["rows"][row.name] for t, s in accuracy["tasks"].items()}, "mean": scored.get("mean")}
        out["rows"][row.name] = entry
    return out


# --- cells ----------------------------------------------------------------------------------------------


def _seconds(m: Measurement | None) -> str:
    if m is None:
        return "-"
    return f"{m['median_s']:.3f}" if all_ok(m) else str(m.get("status", "-"))


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _interval(estimate: Mapping[str, Any] | None) -> str:
    if not estimate:
        return "-"
    return f"{estimate['mean']:.1f} [{estimate['low']:.1f}, {estimate['high']:.1f}]"


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def render(summary: Mapping[str, Any], speed: Mapping[str, Any] | None, accuracy: Mapping[str, Any] | None,
           ) -> tuple[list[str], list[list[str]], list[str]]:
    """``(headers, rows, notes)``: the table's cells, and the numbered notes its ``n/a`` cells point to."""
    headers = ["config"]
    lengths: list[int] = list(speed["settings"]["lengths"]) if speed else []
    e2e_lengths = set(speed["settings"]["e2e_lengths"]) if speed else set()
    new = speed["settings"]["new_tokens"] if speed else 0
    for n in lengths:
        headers += [f"TTFT {_k(n)} s", f"x unpruned {_k(n)}", f"x best stock {_k(n)}"]
        if n in e2e_lengths:
            headers += [f"e2e {_k(n)}+{new} s", f"e2e x unpruned {_k(n)}", f"e2e x best stock {_k(n)}"]
        headers.append(f"KV {_k(n)} GiB")
    tasks = list(accuracy["tasks"]) if accuracy else []
    for task in tasks:
        n_samples = _sample_count(accuracy["tasks"][task])
        headers.append(f"{task} % (n={n_samples})")
    if len(tasks) > 1:
        headers.append("mean % (tasks)")
    if tasks:
        headers.append("kept % (acc.)")
    notes: list[str] = []
    body = []
    for name, entry in summary["rows"].items():
        cells = [name]
        if speed:
            cells += _speed_cells(entry["speed"], lengths, e2e_lengths, notes, name)
        if accuracy:
            cells += _accuracy_cells(entry["accuracy"], tasks, notes, name)
        body.append(cells)
    return headers, body, notes


def _sample_count(task_summary: Mapping[str, Any]) -> str:
    counts = sorted({r["estimate"]["n"] for r in task_summary["rows"].values()})
    return "/".join(map(str, counts)) or "0"


def _note(notes: list[str], name: str, reason: str) -> str:
    notes.append(f"`{name}`: {reason}")
    return f"n/a [{len(notes)}]"


def _speed_cells(entry: Any, lengths: Sequence[int], e2e_lengths: set[int], notes: list[str], name: str) -> list[str]:
    width = sum(4 + 3 * (n in e2e_lengths) for n in lengths)
    if isinstance(entry, str):
        return [_note(notes, name, entry)] + ["n/a"] * (width - 1)
    cells = []
    for n in lengths:
        s = entry[n]
        cells += [_seconds(s["ttft"]), _times(s["ttft_x_unpruned"]), _times(s["ttft_x_best_stock"])]
        if n in e2e_lengths:
            e2e = _seconds(s["e2e"])
            cells += [f"{e2e} ({s['e2e_decoder']})" if s["e2e_decoder"] else e2e, _times(s["e2e_x_unpruned"]),
                      _times(s["e2e_x_best_stock"])]
        cells.append("-" if s["kv_bytes"] is None else f"{s['kv_bytes'] / GIB:.3g}")
    return cells


def _accuracy_cells(entry: Any, tasks: Sequence[str], notes: list[str], name: str) -> list[str]:
    width = len(tasks) + (len(tasks) > 1) + 1
    if isinstance(entry, str):
        return [_note(notes, name, entry)] + ["n/a"] * (width - 1)
    cells = [_interval(entry["tasks"][t]["estimate"]) for t in tasks]
    if len(tasks) > 1:
        cells.append(_interval(entry["mean"]))
    kept = [entry["tasks"][t]["kept_share"] for t in tasks if entry["tasks"][t]["kept_share"] is not None]
    cells.append(f"{100 * sum(kept) / len(kept):.1f}" if kept else "-")
    return cells


def baseline_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per length: the best stock variant and its TTFT and end-to-end times."""
    lines = []
    for n, b in summary["baselines"].items():
        text = f"- {_k(n)}: best stock TTFT {_seconds(b['ttft'])} s ({b['ttft_best_stock'] or '-'})"
        if b["e2e"] is not None:
            text += f", end to end {_seconds(b['e2e'])} s ({b['e2e_best_stock'] or '-'})"
        lines.append(text)
    return lines
