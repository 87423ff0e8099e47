"""A greedy generation through the static decoder: the pipeline's (pruned) prefill, then the static decode.

The manager decides how its prompt KV reaches a static decoder: by default the generic
:class:`~sliminfer.decode.static.StaticDecoder` takes it through ``layer_keys``/``layer_values`` (or
straight from the prefill, when the manager takes the buffers it is offered); a manager that brings its
own static decode returns a :class:`StaticRun` from ``KVCacheManager.static_run`` (the offload manager
does: its selection and block copies run inside the graph).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sliminfer.core.config import DecodeSection, updated_section
from sliminfer.core.errors import InputError
from sliminfer.core.results import GenerationResult, PrefillResult
from sliminfer.core.timing import now
from sliminfer.decode.static import StaticDecoder

if TYPE_CHECKING:
    from sliminfer.cache.base import KVCacheManager
    from sliminfer.core.forward import StagedForward
    from sliminfer.core.pipeline import SlimPipeline
    from sliminfer.decode.streaming import TokenSink

log = logging.getLogger(__name__)


@dataclass
class StaticOutcome:
    """What one static run produced: every token (EOS not cut yet), and when each phase ended."""

    tokens: list[int]
    start: float  # the request began (device-synchronised clock)
    ttft: float  # seconds to the first token (prefill included)
    ready: float  # the decode steps began (after the KV hand-over, and a capture when the decoder is new)
    end: float
    steps: int  # decode steps timed between ready and end
    prefill: PrefillResult
    decoder: StaticDecoder | None  # None when every step ran eagerly


class StaticRun(ABC):
    """A cache manager's own static decode (``KVCacheManager.static_run``)."""

    @abstractmethod
    def run(self, forward: StagedForward, ids: torch.Tensor, max_new_tokens: int,
            options: DecodeSection, sink: TokenSink | None = None) -> StaticOutcome:
        """Prefill ``ids`` into the manager, then decode ``max_new_tokens`` tokens greedily in all. With a
        ``sink`` (streaming), put each token into it as the host learns it, and stop after one it stops at."""


def static_generate(
    pipe: SlimPipeline,
    prompt_or_ids: Any,
    max_new_tokens: int,
    *,
    options: DecodeSection | Mapping[str, Any] | None = None,
    decoder: StaticDecoder | None = None,
    stop_at_eos: bool = True,
    eos: Collection[int] | None = None,
    sink: TokenSink | None = None,
) -> GenerationResult:
    """Greedy generation with the static decode (``decode.mode: static``; ``generate(fast=True)``).

    Token-identical to the eager decode's greedy tokens (up to floating-point summation order in the
    attention). The decode runs ``max_new_tokens - 1`` steps without looking at the host; with
    ``stop_at_eos`` the tokens are cut after the first EOS. ``options``: a ``decode:`` section, or a
    mapping of its fields (``{"kernel": "sdpa", "fuse": False}``) over the pipeline's own. Pass the
    ``decoder`` of an earlier result to reuse its buffers and captured graph when the new prompt fits.
    ``eos``: the ids that end the text (default: :meth:`SlimPipeline.eos_ids`). With a ``sink`` (a streamer,
    see :mod:`sliminfer.decode.streaming`) each token reaches it as the host reads it, and the decode stops
    at its stop ids instead of running every step; the tokens are the same.
    """
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens: {max_new_tokens}; must be at least 1")
    ids = pipe.encode(prompt_or_ids)
    pipe.forward.check_prompt(ids, max_new_tokens)
    if not isinstance(options, DecodeSection):
        options = updated_section(pipe.config.decode, "decode", options or {})
    cache = pipe.new_cache(max_new_tokens)
    own = cache.static_run()
    if own is not None:
        outcome = own.run(pipe.forward, ids, max_new_tokens, options, sink)
    else:
        outcome = _generic_run(pipe.forward, cache, ids, max_new_tokens, options, decoder, sink)
    return finish_generation(pipe, outcome, stop_at_eos, pipe.eos_ids() if eos is None else eos)


def _generic_run(forward: StagedForward, cache: KVCacheManager, ids: torch.Tensor, max_new_tokens: int,
                 options: DecodeSection, decoder: StaticDecoder | None, sink: TokenSink | None) -> StaticOutcome:
    device = ids.device
    if decoder is not None:
        decoder.offer_buffers(cache)
    start = now(device)
    prefill = forward.prefill(ids, cache)
    first = prefill.logits.argmax(dim=-1, keepdim=True)
    ttft = now(device) - start
    if sink is not None and sink.take(int(first)):  # EOS first: no step to run (an earlier decoder stays kept)
        return StaticOutcome([int(first)], start, ttft, now(device), now(device), 0, prefill, decoder)
    if decoder is not None and decoder.fits(prefill, max_new_tokens):
        log.debug("reusing the static decoder of an earlier request (its buffers and graph)")
    else:
        if decoder is not None:
            log.info("the earlier static decoder does not fit this request; building a new one")
        decoder = StaticDecoder.for_prefill(forward.adapter, prefill, max_new_tokens, options)
    decoder.load(prefill, first)
    cache.setup(forward.adapter.num_layers, 0)  # drop the prefill's own buffers, if any
    ready = now(device)
    steps = decoder.decode(max_new_tokens - 1, sink)
    end = now(device)
    return StaticOutcome(decoder.tokens(steps + 1), start, ttft, ready, end, steps, prefill, decoder)


def finish_generation(pipe: SlimPipeline, outcome: StaticOutcome, stop_at_eos: bool,
                      eos: Collection[int]) -> GenerationResult:
    """Cut the tokens after the first ``eos`` id (with ``stop_at_eos``), decode the text, time the parts."""
    tokens, stopped_by = outcome.tokens, "max_new_tokens"
    if stop_at_eos:
        cut = next((i for i, t in enumerate(tokens) if t in eos), None)
        if cut is not None:
            tokens, stopped_by = tokens[: cut + 1], "eos"
    text = pipe.tokenizer.decode(tokens, skip_special_tokens=True) if pipe.tokenizer is not None else ""
    o = outcome
    return GenerationResult(
        token_ids=tokens,
        text=text,
        prompt_tokens=o.prefill.prompt_tokens,
        ttft_s=o.ttft,
        decode_s_per_token=(o.end - o.ready) / o.steps if o.steps else 0.0,
        total_s=o.end - o.start,
        prefill=o.prefill,
        stopped_by=stopped_by,
        setup_s=o.ready - o.start - o.ttft,
        decoder=o.decoder,
    )
