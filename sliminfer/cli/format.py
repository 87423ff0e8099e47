"""Small text-formatting helpers shared by the commands (tables, byte sizes, layer runs)."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def layer_runs(tokens_per_layer: Sequence[int]) -> str:
    """'0-9: 4096, 10-19: 2048' for runs of equal token counts."""
    runs: list[str] = []
    start = 0
    for i in range(1, len(tokens_per_layer) + 1):
        if i == len(tokens_per_layer) or tokens_per_layer[i] != tokens_per_layer[start]:
            span = f"{start}" if i - 1 == start else f"{start}-{i - 1}"
            runs.append(f"{span}: {tokens_per_layer[start]}")
            start = i
    return ", ".join(runs)
