"""Timing a grid of prompt lengths x output lengths: stock transformers against sliminfer.

The equivalent of the authors' ``demo.py --mode origin|sliminfer``, every mode in one process on the
same model and the same prompts:

- stock: the variants of :mod:`~sliminfer.bench.stock` (``generate`` as it comes, with cuDNN attention
  excluded, with a static cache compiled by transformers), TTFT and end to end;
- sliminfer TTFT: the pipeline's prefill; end-to-end with the eager decode (``pipe.generate``) and
  with the static decode replayed as a CUDA graph (:func:`~sliminfer.decode.run.static_generate`,
  options from the config's ``decode:`` section).

Every sliminfer speedup is given against plain ``stock`` and against the best stock variant measured
(:func:`~sliminfer.bench.stock.best_stock`), so a speedup is never only one over a slow default.

Every measurement has warm-up runs, then repeats timed with CUDA events (``perf_counter`` on the
CPU) and reported as medians, with the peak GPU memory (reset before each run)
(:class:`~sliminfer.bench.measure.Meter`). The stock cache is freed and the allocator emptied before
the next measurement; an out-of-memory error is recorded as ``"oom"`` for that measurement instead of
ending the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sliminfer.bench.cost import H100_SXM_BANDWIDTH, ModelCost
from sliminfer.bench.measure import Meter, free_memory, ratio, token_agreement
from sliminfer.bench.stock import STOCK_MODES, StockRunner, best_measurement, best_stock
from sliminfer.core.pipeline import SlimPipeline
from sliminfer.decode.run import static_generate
from sliminfer.decode.static import StaticDecoder

__all__ = ["ALL_MODES", "DECODERS", "MODES", "GridRunner", "GridSettings", "Meter", "free_memory", "prompt_ids"]

ALL_MODES = (*STOCK_MODES, "sliminfer")
MODES = ALL_MODES  # the default: every stock variant, so that the best stock is among them
DECODERS = ("eager", "static")


@dataclass
class GridSettings:
    """What to time and how often."""

    prompt_lengths: list[int]
    output_lengths: list[int] = field(default_factory=list)  # end-to-end runs; 0 or 1 entries are skipped
    repeats: int = 3
    warmup: int = 1
    modes: tuple[str, ...] = MODES
    decoders: tuple[str, ...] = DECODERS  # sliminfer end-to-end paths
    measure_ttft: bool = True
    bandwidth: float = H100_SXM_BANDWIDTH
    bandwidth_source: str = "given"  # or "measured copy": :func:`~sliminfer.bench.measure.copy_bandwidth` here
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_ids(n: int, vocab: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``[1, n]`` random token ids (speed runs need no text), the same for every mode."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
    return torch.randint(0, vocab, (1, n), generator=gen).to(device)


class GridRunner:
    """Runs :class:`GridSettings` on one pipeline (whose model is also the stock baseline)."""

    def __init__(self, pipe: SlimPipeline, settings: GridSettings, log: Callable[[str], None] = print) -> None:
        self.pipe = pipe
        self.model = pipe.model
        self.settings = settings
        self.log = log
        self.device = pipe.device
        self.cost = ModelCost.of(pipe.adapter)
        self.meter = Meter(self.device, settings.warmup, settings.repeats)
        self.stock = StockRunner(self.model, self.meter, log)
        self._decoder: StaticDecoder | None = None

    def run(self) -> list[dict[str, Any]]:
        points = []
        for n in self.settings.prompt_lengths:
            points.append(self.point(n))
            free_memory(self.device)
        return points

    # one prompt length -----------------------------------------------------------------------------
    def point(self, n: int) -> dict[str, Any]:
        s = self.settings
        ids = prompt_ids(n, self.cost.vocab, self.device, s.seed)
        point: dict[str, Any] = {"prompt_tokens": n}
        if s.measure_ttft:
            point["ttft"] = self._ttft(ids, point)
        if "tokens_per_layer" not in point and "sliminfer" in s.modes:
            point.update(self._layout_of(ids))
        tokens = point.get("tokens_per_layer") or [n] * self.cost.num_layers
        full = self.cost.prefill_flops([n] * self.cost.num_layers)
        slim = self.cost.prefill_flops(tokens, self.pipe.forward.prune_after_attention)
        point["flops"] = {"stock": full, "sliminfer": slim, "ratio": full / slim}
        ttft = point.get("ttft", {})
        point["e2e"] = [self._e2e(ids, tokens, new, ttft) for new in s.output_lengths if new > 1]
        return point

    def _ttft(self, ids: torch.Tensor, point: dict[str, Any]) -> dict[str, Any]:
        """Stock and sliminfer TTFT, the speedup against plain stock and against the best stock; the
        pipeline's layout (tokens per layer, KV bytes) goes to ``point``."""
        ttft: dict[str, Any] = self.stock.ttft(ids, self.settings.modes)
        if "sliminfer" in self.settings.modes:
            self.log(f"  {ids.shape[1]} tokens: sliminfer prefill")
            ttft["sliminfer"] = self.meter.measure(lambda: self.pipe.prefill(ids), _layout)
            point.update({k: ttft["sliminfer"].pop(k) for k in _LAYOUT_KEYS if k in ttft["sliminfer"]})
        ttft["speedup"] = ratio(ttft.get("stock"), ttft.get("sliminfer"))
        ttft["best_stock"] = best_stock(ttft)
        ttft["speedup_vs_best_stock"] = ratio(best_measurement(ttft), ttft.get("sliminfer"))
        return ttft

    def _layout_of(self, ids: torch.Tensor) -> dict[str, Any]:
        """Tokens per layer and KV bytes of this prompt from one untimed pipeline prefill."""
        try:
            layout = _layout(self.pipe.prefill(ids))
        except torch.OutOfMemoryError:
            layout = {"layout_error": "oom"}
        free_memory(self.device)
        return layout

    # end to end --------------------------------------------------------------------------------------
    def _e2e(self, ids: torch.Tensor, tokens: Sequence[int], new: int, ttft: dict[str, Any]) -> dict[str, Any]:
        """One output length: the stock variants, sliminfer's decode paths, the floors and the speedups."""
        s, n = self.settings, ids.shape[1]
        row: dict[str, Any] = {"new_tokens": new, **self.stock.end_to_end(ids, new, s.modes, ttft)}
        if "sliminfer" in s.modes and "eager" in s.decoders:
            self.log(f"  {n} tokens: sliminfer eager decode, {new} new")
            row["eager"] = self.meter.measure(lambda: self.pipe.generate(ids, max_new_tokens=new), _generation_info)
        if "sliminfer" in s.modes and "static" in s.decoders:
            self.log(f"  {n} tokens: sliminfer static decode, {new} new")
            row["static"] = self.meter.measure(lambda: self._static(ids, new), _static_info)
            self._decoder = None
            free_memory(self.device)
        row["floor_ms_per_token"] = {
            "stock": self.cost.decode_floor_s([n] * self.cost.num_layers, new, s.bandwidth) * 1e3,
            "sliminfer": self.cost.decode_floor_s(tokens, new, s.bandwidth) * 1e3,
            "bandwidth_bytes_per_s": s.bandwidth,
            "bandwidth_source": s.bandwidth_source,
        }
        row["achieved_gb_per_s"] = _achieved_bandwidth(row, self.cost.decode_bytes_per_token([n] * self.cost.num_layers,
                                                       new), self.cost.decode_bytes_per_token(tokens, new))
        row["best_stock"] = best_stock(row)
        row["speedup"] = _speedups(row)
        agreement = token_agreement(row.get("eager"), row.get("static"))
        if agreement is not None:
            row["static_matches_eager_tokens"] = agreement
        for key in ("eager", "static"):
            if isinstance(row.get(key), dict):
                row[key].pop("tokens", None)
        return row

    def _static(self, ids: torch.Tensor, new: int) -> Any:
        result = static_generate(self.pipe, ids, new, decoder=self._decoder, stop_at_eos=False)
        self._decoder = result.decoder if result.decoder is not None and result.decoder.reusable else None
        return result


def _achieved_bandwidth(row: dict[str, Any], stock_bytes: float, slim_bytes: float) -> dict[str, float]:
    """Each measured decode's GB/s: the bytes a step must read at least (weights plus its KV: the full
    prompt's for stock, the pruned one's for sliminfer) over its ms/token, beside the floor's bandwidth."""
    out = {}
    for mode in (*STOCK_MODES, "eager", "static"):
        ms = row.get(mode, {}).get("decode_ms_per_token") if isinstance(row.get(mode), dict) else None
        if ms is not None and ms > 0:  # a stock decode's ms/token is (generate - TTFT) / n: noisy on a CPU
            out[mode] = (stock_bytes if mode in STOCK_MODES else slim_bytes) / (ms * 1e-3) / 1e9
    return out


def _speedups(row: dict[str, Any]) -> dict[str, float | None]:
    """sliminfer's eager and static decodes against plain stock, stock static and the row's best stock."""
    best, eager, static = best_measurement(row), row.get("eager"), row.get("static")
    return {"eager": ratio(row.get("stock"), eager), "static": ratio(row.get("stock"), static),
            "static_vs_stock_static": ratio(row.get("stock_static"), static),
            "eager_vs_best_stock": ratio(best, eager), "static_vs_best_stock": ratio(best, static)}


_LAYOUT_KEYS = ("tokens_per_layer", "kv_bytes", "full_kv_bytes", "kv_saved")


def _layout(result: Any) -> dict[str, Any]:
    return dict(zip(_LAYOUT_KEYS, (result.tokens_per_layer, result.kv_bytes, result.full_kv_bytes,
                                   result.kv_saved_fraction)))


def _generation_info(out: Any) -> dict[str, Any]:
    return {"new_tokens_made": len(out.token_ids), "ttft_s": out.ttft_s,
            "decode_ms_per_token": out.decode_s_per_token * 1e3, "tokens": out.token_ids}


def _static_info(out: Any) -> dict[str, Any]:
    decoder = out.decoder  # None when every step ran eagerly (an offload pipeline's first steps)
    info = {"new_tokens_made": len(out.token_ids), "ttft_s": out.ttft_s,
            "decode_ms_per_token": out.decode_s_per_token * 1e3, "setup_s": out.setup_s,
            "graph": decoder is not None and decoder.graph is not None,
            "attention": None if decoder is None else decoder.attention, "tokens": out.token_ids}
    if decoder is not None:
        info.update(graph_error=decoder.graph_error, compiled=decoder.compiled, capture_s=decoder.capture_s,
                    static_kv_bytes=decoder.kv_bytes(), decoder_stats=decoder.stats())
    return info

