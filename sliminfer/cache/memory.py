"""GPU out-of-memory errors that say what happened and what to try, instead of a deep stack trace.

``call_with_oom_message`` runs a prefill or a generation: a ``torch.cuda.OutOfMemoryError`` raised anywhere
inside becomes a :class:`GPUOutOfMemoryError` whose message names the prompt length, the phase, the
memory this process may use (the per-process cap set with ``torch.cuda.set_per_process_memory_fraction``,
or the whole card), what was in use, and what to try: the advice the cache managers declare (``memory_saving`` of
a manager that would save memory, or ``memory_advice`` of the one in use) and pruning, where it is off. The new error is raised after the ``except`` block, so it keeps no reference to the
failed frames and their tensors: the memory is free again when the caller sees it.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from sliminfer.core.errors import SlimInferError

T = TypeVar("T")
GiB = float(1 << 30)


class GPUOutOfMemoryError(SlimInferError, MemoryError):
    """The GPU ran out of memory; the message names the cap and what to try."""

    def __init__(self, message: str, *, phase: str, prompt_tokens: int | None, cap_bytes: int | None,
                 total_bytes: int | None, torch_message: str = "") -> None:
        super().__init__(message)
        self.phase, self.prompt_tokens = phase, prompt_tokens
        self.cap_bytes, self.total_bytes = cap_bytes, total_bytes
        self.torch_message = torch_message


def memory_cap(device: torch.device | str | int | None = None) -> tuple[int, int, float]:
    """``(cap_bytes, total_bytes, fraction)`` this process may allocate on the CUDA ``device``."""
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    total = int(torch.cuda.get_device_properties(device).total_memory)
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    fraction = 1.0
    if getter is not None:
        try:
            fraction = float(getter(device))
        except Exception:  # noqa: BLE001 - older builds: assume no cap
            fraction = 1.0
    return int(total * fraction), total, fraction


def describe_oom(
    torch_message: str,
    device: Any = None,
    *,
    phase: str = "prefill",
    prompt_tokens: int | None = None,
    cache_advice: list[str] | None = None,
    pruning: bool | None = None,
    weights_bytes: int | None = None,
) -> GPUOutOfMemoryError:
    """The :class:`GPUOutOfMemoryError` for a ``torch.cuda.OutOfMemoryError`` message."""
    cap = total = None
    where = "the GPU"
    limit = ""
    # torch's own message says "... with 24.00 GiB allowed" when a per-process cap is set; torch builds
    # without get_per_process_memory_fraction (2.11) leave that as the only way to see the cap
    allowed = re.search(r"([0-9.]+ [KMGT]i?B) allowed", torch_message)
    try:
        cap, total, fraction = memory_cap(device)
        dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        where = str(dev)
        if fraction < 0.999:
            limit = (f"this process may use {cap / GiB:.1f} GiB of the GPU's {total / GiB:.1f} GiB (capped with "
                     f"torch.cuda.set_per_process_memory_fraction({fraction:.3f}))")
        elif allowed:
            limit = (f"this process may use {allowed.group(1)} of the GPU's {total / GiB:.1f} GiB (a per-process "
                     "cap, torch.cuda.set_per_process_memory_fraction)")
        else:
            limit = f"this process may use the whole GPU: {total / GiB:.1f} GiB (no per-process cap)"
        in_use = torch.cuda.memory_allocated(dev)
        limit += f"; {in_use / GiB:.1f} GiB were allocated at the failure"
    except Exception:  # noqa: BLE001 - describing must never fail
        if allowed and not limit:
            limit = f"this process may use {allowed.group(1)} of the GPU (a per-process cap)"
    tried = re.search(r"Tried to allocate ([0-9.]+ [KMGT]i?B)", torch_message)
    prompt = f" with a {prompt_tokens}-token prompt" if prompt_tokens is not None else ""
    parts = [f"{phase}: out of GPU memory on {where}{prompt}"]
    if tried:
        parts[0] += f" (tried to allocate {tried.group(1)} more)"
    if limit:
        parts.append(limit)
    if weights_bytes:
        parts.append(f"the model's weights take {weights_bytes / GiB:.1f} GiB of it")
    hints = list(cache_advice or [])
    if pruning is False:
        hints.append("enable pruning (e.g. the paper's schedule: pruning: {schedule: {name: fixed, "
                     "layers: [9, 19, 29], "
                     "budgets: [8192, 4096, 2048]}}), which also shrinks the prefill's activations")
    hints.append("use a shorter prompt")
    message = "; ".join(parts) + ". Try: " + "; or ".join(hints) + "."
    return GPUOutOfMemoryError(message, phase=phase, prompt_tokens=prompt_tokens, cap_bytes=cap, total_bytes=total,
                               torch_message=torch_message)


def call_with_oom_message(fn: Callable[[], T], device: Any = None, **context: Any) -> T:
    """``fn()``, with a ``torch.cuda.OutOfMemoryError`` turned into a :class:`GPUOutOfMemoryError`
    (keywords as :func:`describe_oom`)."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as exc:
        message = str(exc)
    # raised here, after the except block: the new error keeps no reference to the failed frames and
    # their tensors (no __context__), so their memory is free once they are collected
    gc.collect()
    torch.cuda.empty_cache()
    raise describe_oom(message, device, **context)
