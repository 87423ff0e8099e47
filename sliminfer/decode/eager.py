"""The eager decode: token by token through the model's own attention modules and the cache manager.

Every generation option works here (sampling, transformers' logits processors, stop strings, streamers,
decode-step observers); the layer loop of one step is :meth:`StagedForward.decode_step`, with
:func:`~sliminfer.decode.kernels.decode_attention_kernels`. Each token is read on the host anyway (for EOS
and stop strings), so streaming it costs nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sliminfer.core import events
from sliminfer.core.results import GenerationResult
from sliminfer.core.sampling import TokenChooser, logits_processors
from sliminfer.core.timing import now

if TYPE_CHECKING:
    from sliminfer.core.config import GenerationSection
    from sliminfer.core.decoding import DecodingOptions
    from sliminfer.core.pipeline import SlimPipeline
    from sliminfer.decode.streaming import TokenSink


def eager_generate(pipe: SlimPipeline, ids: torch.Tensor, options: DecodingOptions,
                   sink: TokenSink | None = None) -> GenerationResult:
    """Prefill ``ids`` (checked ``[1, n]`` ids), then decode until EOS, a stop string or ``max_new_tokens``,
    putting each token into ``sink`` as it comes."""
    gen = options.gen
    device = pipe.device
    choose = TokenChooser(logits_processors(options, ids.shape[1], device), options.sampling,
                          _generator(pipe, gen), ids, gen.max_new_tokens)
    eos = options.eos
    observe = pipe.registry.has_observers("sliminfer_decode_step")
    start = now(device)
    prefill = pipe.forward.prefill(ids, pipe.new_cache(gen.max_new_tokens))
    token = choose(prefill.logits)
    ttft = now(device) - start
    tokens = [int(token)]
    if sink is not None:
        sink.emit(tokens[-1])
    stopped_by = "max_new_tokens"
    position = prefill.next_position
    while True:
        if observe:
            pipe.registry.pm.hook.sliminfer_decode_step(event=events.DecodeStep(len(tokens) - 1, tokens[-1], position))
        if tokens[-1] in eos:
            stopped_by = "eos"
            break
        if gen.stop and _hit_stop(pipe.tokenizer, tokens, gen.stop):
            stopped_by = "stop"
            break
        if len(tokens) >= gen.max_new_tokens:
            break
        token = choose(pipe.forward.decode_step(token, position, prefill.cache))
        tokens.append(int(token))
        if sink is not None:
            sink.emit(tokens[-1])
        position += 1
    total = now(device) - start
    steps = len(tokens) - 1
    return GenerationResult(
        token_ids=tokens,
        text=_text(pipe.tokenizer, tokens, gen.stop),
        prompt_tokens=prefill.prompt_tokens,
        ttft_s=ttft,
        decode_s_per_token=(total - ttft) / steps if steps else 0.0,
        total_s=total,
        prefill=prefill,
        stopped_by=stopped_by,
    )


def _generator(pipe: SlimPipeline, gen: GenerationSection) -> torch.Generator | None:
    """The sampler's own generator (None when greedy), seeded from ``gen.seed``, or else from a draw of torch's
    global generator: ``torch.manual_seed`` / ``transformers.set_seed`` then make a run repeatable, as they
    do for ``model.generate`` (whose draws differ: it samples from the global generator itself)."""
    if gen.temperature <= 0:
        return None
    generator = torch.Generator(device=pipe.device)
    seed = gen.seed
    if seed is None:
        seed = int(torch.randint(0, 1 << 62, ()))
        if pipe.adapter.head_shards is not None:  # tensor-parallel ranks must sample the same tokens
            seed = pipe.adapter.head_shards.broadcast_int(seed % (1 << 62), pipe.device)
    generator.manual_seed(seed)
    return generator


def _hit_stop(tokenizer: object, tokens: list[int], stop: Sequence[str]) -> bool:
    if tokenizer is None:
        return False
    text = tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
    return any(s in text for s in stop)


def _text(tokenizer: object, tokens: list[int], stop: Sequence[str]) -> str:
    if tokenizer is None:
        return ""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    lead = len(text) - len(text.lstrip())  # a stop string in leading whitespace does not count
    for s in stop:
        cut = text.find(s, lead)
        if cut >= 0:
            text = text[:cut]
    return text
