"""Measuring one callable: warm-up, repeats timed with CUDA events (``perf_counter`` on the CPU),
medians, peak GPU memory, and an out-of-memory error as a status instead of an exception; plus the
small helpers that read such measurements (all OK, ratios, agreeing token prefixes).

Shared by the stock side (:mod:`~sliminfer.bench.stock`) and the grid (:mod:`~sliminfer.bench.grid`),
so both time their calls the same way.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def free_memory(device: torch.device) -> None:
    """Collect and empty the allocator, so that one measurement's cache does not crowd the next."""
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

    def measure_or_raise(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """:meth:`measure`, raising where it would return a failed status: for a script or helper that times
        one thing and has nothing to go on without it."""
        result = self.measure(fn)
        if result["status"] != "ok":
            raise RuntimeError(f"timing failed ({result['status']}): {result['error']}")
        return result


def graph_seconds_per_call(fn: Callable[[], Any], calls: int, repeats: int, device: torch.device) -> float:
    """Median seconds per call of ``fn`` run ``calls`` times back to back: on a GPU captured in one CUDA graph
    and timed by replays (CUDA events), elsewhere a plain loop (``perf_counter``); one untimed round first.

    Why: a kernel inside the captured decode step runs without launch gaps; timing it alone with a launch per
    call would add the launch cost that the step never pays. The kernel and GEMV micro-benchmarks
    (``benchmarks/gpu/decode_kernels.py``, ``gemv_bandwidth.py``) time this one way.
    """
    if calls < 1 or repeats < 1:
        raise ValueError(f"calls and repeats must be at least 1, got calls={calls}, repeats={repeats}")
    if device.type != "cuda":
        def run() -> None:
            for _ in range(calls):
                fn()
        return Meter(device, warmup=1, repeats=repeats).measure_or_raise(run)["median_s"] / calls
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture wants its warm-up (allocations, lazy inits) off the default stream
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return Meter(device, warmup=1, repeats=repeats).measure_or_raise(graph.replay)["median_s"] / calls


def copy_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 9) -> float:
    """Bytes per second a copy of ``nbytes`` (default 1 GiB on a GPU, 64 MiB elsewhere) within ``device``'s
    memory moves, counting bytes read and written (median of ``repeats`` after one untimed copy, timed as
    :class:`Meter` times everything).

    Why: the decode floor divides the bytes a step must read by a bandwidth; a card's data-sheet peak is
    never reached, while a plain copy is about the best a kernel streams. gpu.md's 4.3 TB/s for the H200
    is this figure; measured in the bench's own process, the floor fits whichever card the run got.
    """
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 1 << 26)
    seconds = _copy_seconds(device, nbytes, repeats)
    free_memory(device)  # the two buffers went with _copy_seconds
    return 2 * nbytes / seconds


def _copy_seconds(device: torch.device, nbytes: int, repeats: int) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return Meter(device, warmup=1, repeats=repeats).measure_or_raise(lambda: dst.copy_(src))["median_s"]


def all_ok(*results: dict[str, Any] | None) -> bool:
    """Whether every measurement was made and ran (no OOM, no error, not skipped)."""
    return all(r is not None and r.get("status") == "ok" for r in results)


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "median_s") -> float | None:
    """``a[key] / b[key]`` (a speedup of ``b`` over ``a``), or None unless both measured OK."""
    if a is None or b is None or not all_ok(a, b) or not b[key]:
        return None
    return a[key] / b[key]


def agreeing_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two generations share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def token_agreement(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """The share of ``a``'s tokens that ``b`` reproduces from the start, when both kept their tokens."""
    if a is None or b is None or not all_ok(a, b) or "tokens" not in a or "tokens" not in b:
        return None
    return agreeing_prefix(a["tokens"], b["tokens"]) / max(len(a["tokens"]), 1)
