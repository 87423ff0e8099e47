"""Timing a grid of prompt lengths x output lengths: stock transformers against sliminfer.

The equivalent of the authors' ``demo.py --mode origin|sliminfer``, both modes in one process on the
same model and the same prompts:

- stock TTFT: ``model(ids, use_cache=True, logits_to_keep=1)``; stock end-to-end:
  ``model.generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)`` (dynamic cache);
- optionally (mode ``stock_static``) the best stock option: the same ``generate`` with
  ``cache_implementation="static"``, which transformers compiles (``torch.compile``, CUDA graphs) on
  CUDA; its first (warm-up) run pays the compilation;
- sliminfer TTFT: the pipeline's prefill; end-to-end with the eager decode (``pipe.generate``) and
  with the static decode replayed as a CUDA graph (:func:`~sliminfer.decode.run.static_generate`,
  options from the config's ``decode:`` section).

Every measurement has warm-up runs, then repeats timed with CUDA events (``perf_counter`` on the
CPU) and reported as medians, with the peak GPU memory (reset before each run). The stock cache is
freed and the allocator emptied before the next measurement; an out-of-memory error is recorded as
``"oom"`` for that measurement instead of ending the grid.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sliminfer.bench.cost import H100_SXM_BANDWIDTH, ModelCost
from sliminfer.core.pipeline import SlimPipeline
from sliminfer.decode.run import static_generate
from sliminfer.decode.static import StaticDecoder

MODES = ("stock", "sliminfer")  # the default modes
ALL_MODES = ("stock", "stock_static", "sliminfer")
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
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_ids(n: int, vocab: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``[1, n]`` random token ids (speed runs need no text), the same for every mode."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
    return torch.randint(0, vocab, (1, n), generator=gen).to(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Meter:
    """Times callables on one device: warm-up, repeats, medians, peak memory, OOM as a status."""

    def __init__(self, device: torch.device, warmup: int, repeats: int) -> None:
        self.device = device
        self.warmup = warmup
        self.repeats = max(1, repeats)

    def _once(self, fn: Callable[[], Any]) -> tuple[float, Any, int | None, int | None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3, out, torch.cuda.max_memory_allocated(self.device), base
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out, None, None

    def measure(self, fn: Callable[[], Any], info: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run ``fn`` warm-up + repeat times; ``info`` turns the last result into extra fields."""
        times: list[float] = []
        peak = base = None
        extra: dict[str, Any] = {}
        try:
            for i in range(self.warmup + self.repeats):
                seconds, out, run_peak, run_base = self._once(fn)
                if i >= self.warmup:
                    times.append(seconds)
                    if run_peak is not None:
                        peak, base = max(peak or 0, run_peak), run_base
                    if info is not None:
                        extra = info(out)
                del out
                gc.collect()  # the allocator keeps its blocks between repeats (steady state); emptied after
        except torch.OutOfMemoryError as exc:
            free_memory(self.device)
            return {"status": "oom", "error": str(exc).splitlines()[0] if str(exc) else "out of memory"}
        except Exception as exc:  # noqa: BLE001 - one broken measurement must not end the grid
            free_memory(self.device)
            return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        free_memory(self.device)
        return {"status": "ok", "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
                "peak_bytes": peak, "base_bytes": base, **extra}


def _ok(*results: dict[str, Any] | None) -> bool:
    return all(r is not None and r.get("status") == "ok" for r in results)


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "median_s") -> float | None:
    return a[key] / b[key] if _ok(a, b) and b[key] else None


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
            ttft: dict[str, Any] = {}
            if "stock" in s.modes:
                self.log(f"  {n} tokens: stock prefill")
                ttft["stock"] = self.meter.measure(lambda: self._stock_prefill(ids))
            if "sliminfer" in s.modes:
                self.log(f"  {n} tokens: sliminfer prefill")
                ttft["sliminfer"] = self.meter.measure(lambda: self.pipe.prefill(ids), _layout)
                point.update({k: ttft["sliminfer"].pop(k) for k in _LAYOUT_KEYS if k in ttft["sliminfer"]})
            ttft["speedup"] = _ratio(ttft.get("stock"), ttft.get("sliminfer"))
            point["ttft"] = ttft
        if "tokens_per_layer" not in point and "sliminfer" in s.modes:
            point.update(self._layout_of(ids))
        tokens = point.get("tokens_per_layer") or [n] * self.cost.num_layers
        full = self.cost.prefill_flops([n] * self.cost.num_layers)
        slim = self.cost.prefill_flops(tokens, self.pipe.forward.prune_after_attention)
        point["flops"] = {"stock": full, "sliminfer": slim, "ratio": full / slim}
        stock_ttft = point.get("ttft", {}).get("stock")
        point["e2e"] = [self._e2e(ids, tokens, new, stock_ttft) for new in s.output_lengths if new > 1]
        return point

    def _layout_of(self, ids: torch.Tensor) -> dict[str, Any]:
        """Tokens per layer and KV bytes of this prompt from one untimed pipeline prefill."""
        try:
            layout = _layout(self.pipe.prefill(ids))
        except torch.OutOfMemoryError:
            layout = {"layout_error": "oom"}
        free_memory(self.device)
        return layout

    @torch.inference_mode()
    def _stock_prefill(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids, use_cache=True, logits_to_keep=1).logits

    # end to end --------------------------------------------------------------------------------------
    def _e2e(self, ids: torch.Tensor, tokens: Sequence[int], new: int,
             stock_ttft: dict[str, Any] | None) -> dict[str, Any]:
        """One output length; the stock decode's ms/token is (generate - stock TTFT) / (new - 1)."""
        s, n = self.settings, ids.shape[1]
        row: dict[str, Any] = {"new_tokens": new}
        if "stock" in s.modes:
            self.log(f"  {n} tokens: stock generate, {new} new")
            row["stock"] = self.meter.measure(lambda: self._stock_generate(ids, new), _token_info)
            if _ok(row["stock"]) and not _ok(stock_ttft):
                stock_ttft = self.meter.measure(lambda: self._stock_prefill(ids))
        if "stock_static" in s.modes:
            self.log(f"  {n} tokens: stock generate, static cache (compiled on CUDA), {new} new")
            row["stock_static"] = self.meter.measure(lambda: self._stock_generate(ids, new, static=True), _token_info)
            if _ok(row["stock_static"]):  # its own prefill (the static cache's mask spans the whole cache)
                first = self.meter.measure(lambda: self._stock_generate(ids, 1, static=True))
                if _ok(first):
                    row["stock_static"]["ttft_s"] = first["median_s"]
                    row["stock_static"]["decode_ms_per_token"] = (
                        (row["stock_static"]["median_s"] - first["median_s"]) / (new - 1) * 1e3)
        if "sliminfer" in s.modes and "eager" in s.decoders:
            self.log(f"  {n} tokens: sliminfer eager decode, {new} new")
            row["eager"] = self.meter.measure(lambda: self.pipe.generate(ids, max_new_tokens=new), _generation_info)
        if "sliminfer" in s.modes and "static" in s.decoders:
            self.log(f"  {n} tokens: sliminfer static decode, {new} new")
            row["static"] = self.meter.measure(lambda: self._static(ids, new), _static_info)
            self._decoder = None
            free_memory(self.device)
        stock = row.get("stock")
        if _ok(stock, stock_ttft):
            stock["ttft_s"] = stock_ttft["median_s"]
            stock["decode_ms_per_token"] = (stock["median_s"] - stock_ttft["median_s"]) / (new - 1) * 1e3
        row["floor_ms_per_token"] = {
            "stock": self.cost.decode_floor_s([n] * self.cost.num_layers, new, s.bandwidth) * 1e3,
            "sliminfer": self.cost.decode_floor_s(tokens, new, s.bandwidth) * 1e3,
            "bandwidth_bytes_per_s": s.bandwidth,
        }
        row["speedup"] = {"eager": _ratio(stock, row.get("eager")), "static": _ratio(stock, row.get("static")),
                          "static_vs_stock_static": _ratio(row.get("stock_static"), row.get("static"))}
        if _ok(row.get("eager"), row.get("static")):
            a, b = row["eager"].pop("tokens"), row["static"].pop("tokens")
            row["static_matches_eager_tokens"] = _agreeing_prefix(a, b) / max(len(a), 1)
        if _ok(row.get("stock_static"), row.get("stock")):
            a, b = row["stock"].get("tokens", []), row["stock_static"].get("tokens", [])
            row["static_matches_stock_tokens"] = _agreeing_prefix(a, b) / max(len(a), 1)
        for key in ("stock", "stock_static", "eager", "static"):
            if isinstance(row.get(key), dict):
                row[key].pop("tokens", None)
        return row

    @torch.inference_mode()
    def _stock_generate(self, ids: torch.Tensor, new: int, static: bool = False) -> list[int]:
        extra = {"cache_implementation": "static"} if static else {}
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                  min_new_tokens=new, **extra)
        return out[0, ids.shape[1]:].tolist()

    def _static(self, ids: torch.Tensor, new: int) -> Any:
        result = static_generate(self.pipe, ids, new, decoder=self._decoder, stop_at_eos=False)
        self._decoder = result.decoder if result.decoder is not None and result.decoder.reusable else None
        return result


_LAYOUT_KEYS = ("tokens_per_layer", "kv_bytes", "full_kv_bytes", "kv_saved")


def _layout(result: Any) -> dict[str, Any]:
    return dict(zip(_LAYOUT_KEYS, (result.tokens_per_layer, result.kv_bytes, result.full_kv_bytes,
                                   result.kv_saved_fraction)))


def _token_info(ids: list[int]) -> dict[str, Any]:
    return {"new_tokens_made": len(ids), "tokens": ids}


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


def _agreeing_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
