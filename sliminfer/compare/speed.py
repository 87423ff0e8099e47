"""The speed side of a comparison: every row timed on one random-weights model by the bench's grid.

Why this shape: the bench already times a pipeline (TTFT, end to end, KV bytes) and the stock
variants (:class:`~sliminfer.bench.grid.GridRunner`); a comparison needs the stock variants once (they
do not depend on the row) and each row's own pipeline around the same model. So the stock grid runs
once on an unpruned pipeline, then each row's grid runs with the ``sliminfer`` mode only, at each
prompt length; speedups against the best stock and against the unpruned row are taken afterwards
(:mod:`sliminfer.compare.table`), from these records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from sliminfer.bench.grid import DECODERS, GridRunner, GridSettings, free_memory
from sliminfer.bench.run import environment, load_bench_pipeline
from sliminfer.bench.shapes import shape_config
from sliminfer.bench.stock import STOCK_MODES
from sliminfer.compare.rows import on_model, pipeline_or_reason
from sliminfer.core.config import ModelSection, SlimConfig
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.prompts import check_length
from sliminfer.core.registry import get_registry
from sliminfer.eval.runner import EvalConfig

log = logging.getLogger(__name__)


@dataclass
class SpeedSettings:
    """What the speed side times. ``e2e_lengths`` (a subset of ``lengths``) get an end-to-end run of
    ``new_tokens`` tokens; ``stock_modes`` are the stock variants timed once; ``decoders`` the
    sliminfer decode paths of the end-to-end runs (the table shows the faster)."""

    shape: str
    lengths: list[int]
    e2e_lengths: list[int] = field(default_factory=list)
    new_tokens: int = 256
    stock_modes: tuple[str, ...] = STOCK_MODES
    decoders: tuple[str, ...] = ("static",)
    repeats: int = 3
    warmup: int = 1
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0

    def check(self) -> None:
        """Refuse settings that cannot run, before any model is built."""
        if not self.lengths or any(n < 1 for n in self.lengths):
            raise ConfigError("--lengths", self.lengths, "give at least one positive prompt length")
        stray = [n for n in self.e2e_lengths if n not in self.lengths]
        if stray:
            raise ConfigError("--e2e-lengths", stray, f"each must also be one of --lengths {self.lengths}")
        if self.e2e_lengths and self.new_tokens < 2:
            raise ConfigError("--new-tokens", self.new_tokens, "must be at least 2 for end-to-end runs (0: none)")
        bad = [m for m in self.stock_modes if m not in STOCK_MODES]
        if bad:
            raise ConfigError("--stock", bad, f"choose from {', '.join(STOCK_MODES)} (or none)")
        bad = [d for d in self.decoders if d not in DECODERS]
        if bad or not self.decoders:
            raise ConfigError("--decode", list(self.decoders), f"choose one or more of {', '.join(DECODERS)}")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError("--repeats/--warmup", (self.repeats, self.warmup), "repeats >= 1, warmup >= 0")

        hf_config = shape_config(self.shape)
        positions = get_registry().adapter_for(hf_config).cls.positions_in(hf_config)
        for n in self.lengths:
            new = self.new_tokens if n in self.e2e_lengths else 1
            try:
                check_length(n, new, positions)
            except InputError as exc:
                flag = "--e2e-lengths" if new > 1 else "--lengths"
                raise ConfigError(flag, n, f"does not fit the {self.shape} shape ({exc})") from None

    def grid(self, length: int, modes: tuple[str, ...]) -> GridSettings:
        """The bench settings of one prompt length (an end-to-end run where asked)."""
        outputs = [self.new_tokens] if length in self.e2e_lengths else []
        return GridSettings(prompt_lengths=[length], output_lengths=outputs, repeats=self.repeats,
                            warmup=self.warmup, modes=modes, decoders=self.decoders, seed=self.seed)


def run_speed(rows: Sequence[EvalConfig], settings: SpeedSettings, progress: bool = True) -> dict[str, Any]:
    """Time the stock variants once and every row, at every length, on one model of ``settings.shape``.

    Returns ``{"model", "environment", "settings", "stock": [bench points], "rows": {name: {"status":
    "ok", "points": [...]} or {"status": "n/a", "reason": ...}}}``; the points are the bench's.
    """
    settings.check()
    section = ModelSection(source=settings.shape, device=settings.device, dtype=settings.dtype)
    base, info = load_bench_pipeline(SlimConfig(model=section), settings.shape, settings.seed)
    result: dict[str, Any] = {"model": info, "environment": environment(base.device), "settings": asdict(settings),
                              "stock": None, "rows": {}}
    steps = (len(rows) + bool(settings.stock_modes)) * len(settings.lengths)
    with tqdm(total=steps, desc="speed", disable=not progress) as bar:
        if settings.stock_modes:
            result["stock"] = _points(base, settings, settings.stock_modes, "stock", bar)
        for row in rows:
            pipe = pipeline_or_reason(base.model, None, on_model(row, section), f"{settings.shape} (speed)")
            if isinstance(pipe, str):
                result["rows"][row.name] = {"status": "n/a", "reason": pipe}
                bar.update(len(settings.lengths))
                continue
            points = _points(pipe, settings, ("sliminfer",), row.name, bar)
            result["rows"][row.name] = {"status": "ok", "points": points}
            del pipe
            free_memory(base.device)
    return result


def _points(pipe: Any, settings: SpeedSettings, modes: tuple[str, ...], label: str, bar: Any) -> list[dict[str, Any]]:
    points = []
    for n in settings.lengths:
        bar.set_postfix_str(f"{label} {n}", refresh=True)
        points.append(GridRunner(pipe, settings.grid(n, modes), log.info).point(n))
        free_memory(pipe.device)
        bar.update()
    return points

