"""The bench's stock side: transformers ``generate`` as a user would choose it, in three variants, and
the pick of the best one, against which every sliminfer speedup is also given.

- ``stock``: ``generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)`` as it comes (dynamic
  cache, torch's SDPA choice). On Hopper torch picks cuDNN attention, which builds an execution plan
  for every new KV length, so each decode step pays plan builds (H200, 8B shape, 32k + 128: about
  77 ms/token, 11.3 s in all);
- ``stock_no_cudnn``: the same call with cuDNN attention excluded (the exclusion sliminfer's own eager
  decode steps use, :func:`~sliminfer.decode.kernels.decode_attention_kernels`): what a user who knows
  about the plan builds runs (6.4 s there). Off CUDA nothing is excluded (there is no cuDNN attention),
  so it equals ``stock``; each measurement records the SDPA backends that were enabled;
- ``stock_static``: ``cache_implementation="static"``, which transformers compiles (``torch.compile``,
  CUDA graphs) on CUDA; its first (warm-up) run pays the compilation (3.8 s there).

TTFT of ``stock`` and ``stock_no_cudnn``: ``model(ids, use_cache=True, logits_to_keep=1)`` under the
variant's backends; ``stock_static`` has its own, a one-token ``generate`` (the static cache's mask
spans the whole cache), measured with its end-to-end run. A variant's decode ms/token is
(generate - its TTFT) / (new - 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from sliminfer.bench.measure import Meter, all_ok, token_agreement
from sliminfer.decode.kernels import decode_attention_kernels

STOCK_MODES = ("stock", "stock_no_cudnn", "stock_static")
PREFILL_MODES = ("stock", "stock_no_cudnn")  # a separate TTFT measurement; stock_static's comes with its e2e
MATCH_KEYS = {"stock_no_cudnn": "no_cudnn_matches_stock_tokens", "stock_static": "static_matches_stock_tokens"}

# torch's global SDPA flags (what sdpa_kernel sets), by backend name
_SDPA_FLAGS = {"FLASH_ATTENTION": "flash_sdp_enabled", "EFFICIENT_ATTENTION": "mem_efficient_sdp_enabled",
               "MATH": "math_sdp_enabled", "CUDNN_ATTENTION": "cudnn_sdp_enabled"}


def attention_context(mode: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The SDPA restriction a stock variant runs under: cuDNN excluded for ``stock_no_cudnn`` (on CUDA),
    torch's own choice for the others (they are timed as they come)."""
    return decode_attention_kernels(device) if mode == "stock_no_cudnn" else contextlib.nullcontext()


def enabled_sdpa_backends() -> list[str]:
    """The SDPA backends torch may pick right now: the record of what a measurement allowed."""
    return [name for name, flag in _SDPA_FLAGS.items() if getattr(torch.backends.cuda, flag)()]


def best_stock(measured: Mapping[str, Any]) -> str | None:
    """The stock variant with the lowest median among those in ``measured`` that ran OK (None if none).

    ``measured`` is an end-to-end row or a TTFT dict (mode name -> measurement), so one rule picks the
    baseline of both tables: the fastest stock a user could have chosen, not just the default one.
    """
    times = {m: measured[m]["median_s"] for m in STOCK_MODES if m in measured and all_ok(measured[m])}
    return min(times, key=times.__getitem__) if times else None


def best_measurement(measured: Mapping[str, Any]) -> dict[str, Any] | None:
    """The measurement of the variant ``measured["best_stock"]`` names (as :func:`best_stock` set it)."""
    name = measured.get("best_stock")
    return measured[name] if name else None


def _token_info(ids: list[int]) -> dict[str, Any]:
    return {"new_tokens_made": len(ids), "tokens": ids}


class StockRunner:
    """Times the stock variants of one model with one :class:`Meter`."""

    def __init__(self, model: Any, meter: Meter, log: Callable[[str], None] = print) -> None:
        self.model = model
        self.meter = meter
        self.device = meter.device
        self.log = log

    def backends(self, mode: str) -> list[str]:
        """The SDPA backends ``mode``'s calls run with on this device."""
        with attention_context(mode, self.device):
            return enabled_sdpa_backends()

    # TTFT --------------------------------------------------------------------------------------------
    def ttft(self, ids: torch.Tensor, modes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """The separate TTFT measurement of each selected variant that has one."""
        out = {}
        for mode in PREFILL_MODES:
            if mode in modes:
                self.log(f"  {ids.shape[1]} tokens: {mode} prefill")
                out[mode] = self.prefill(ids, mode)
        return out

    def prefill(self, ids: torch.Tensor, mode: str) -> dict[str, Any]:
        m = self.meter.measure(lambda: self._prefill(ids, mode))
        if all_ok(m):
            m["sdpa_backends"] = self.backends(mode)
        return m

    @torch.inference_mode()
    def _prefill(self, ids: torch.Tensor, mode: str) -> torch.Tensor:
        with attention_context(mode, self.device):
            return self.model(ids, use_cache=True, logits_to_keep=1).logits

    # end to end --------------------------------------------------------------------------------------
    def end_to_end(self, ids: torch.Tensor, new: int, modes: tuple[str, ...],
                   ttft: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        """Each selected variant's ``generate`` of ``new`` tokens (with its TTFT and decode ms/token),
        and how far the other variants' tokens agree with plain stock's. Tokens are dropped after."""
        row: dict[str, Any] = {}
        for mode in STOCK_MODES:
            if mode in modes:
                self.log(f"  {ids.shape[1]} tokens: {mode} generate, {new} new")
                row[mode] = self.generate(ids, new, mode, ttft.get(mode))
        for mode, key in MATCH_KEYS.items():
            agreement = token_agreement(row.get("stock"), row.get(mode))
            if agreement is not None:
                row[key] = agreement
        for m in row.values():
            if isinstance(m, dict):
                m.pop("tokens", None)
        return row

    def generate(self, ids: torch.Tensor, new: int, mode: str, ttft: dict[str, Any] | None) -> dict[str, Any]:
        """One variant's timed ``generate``; its TTFT is ``ttft`` when that was measured OK, else measured
        here (for stock_static always: a one-token generate with the static cache)."""
        m = self.meter.measure(lambda: self._generate(ids, new, mode), _token_info)
        if not all_ok(m):
            return m
        m["sdpa_backends"] = self.backends(mode)
        if mode == "stock_static":
            ttft = self.meter.measure(lambda: self._generate(ids, 1, mode))
        elif not all_ok(ttft):
            ttft = self.meter.measure(lambda: self._prefill(ids, mode))
        if ttft is not None and all_ok(ttft):
            m["ttft_s"] = ttft["median_s"]
            m["decode_ms_per_token"] = (m["median_s"] - ttft["median_s"]) / (new - 1) * 1e3
        return m

    @torch.inference_mode()
    def _generate(self, ids: torch.Tensor, new: int, mode: str) -> list[int]:
        extra = {"cache_implementation": "static"} if mode == "stock_static" else {}
        with attention_context(mode, self.device):
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=new, min_new_tokens=new, **extra)
        return out[0, ids.shape[1]:].tolist()
