"""Next-token choice: transformers' own logits processors and warpers, then argmax or a seeded draw.

Why transformers' classes: repetition penalty, min-p, n-gram bans and the rest have exact semantics that
users know from ``model.generate``; building the public processor classes from the same fields, in the
same order, gives the same scores, so a sampled token differs only by the random draw. The order is
``GenerationMixin._get_logits_processor``'s (a private method, so it is not called): processors that
act whether or not one samples, then the caller's own, then (sampling only) the warpers, then
``renormalize_logits``. With no processor at all (plain greedy, the default) the raw logits' argmax is
taken, exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from sliminfer.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

    from sliminfer.core.decoding import DecodingOptions


def logits_processors(options: DecodingOptions, prompt_tokens: int, device: torch.device) -> LogitsProcessorList:
    """Every processor and warper ``options`` asks for, built from transformers' public classes in the order
    ``model.generate`` applies them (empty for plain greedy decoding). transformers is imported here, not at
    the top, so that ``import sliminfer`` does not import it."""
    from transformers import (
        EpsilonLogitsWarper,
        EtaLogitsWarper,
        LogitNormalization,
        LogitsProcessorList,
        MinLengthLogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
        MinPLogitsWarper,
        NoBadWordsLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        SequenceBiasLogitsProcessor,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    f, gen = options.processor_fields, options.gen
    eos = sorted(options.eos)
    out = LogitsProcessorList()

    def add(name: str, make: Callable[[], Any]) -> None:
        """Append ``make()``; a value transformers' class refuses is a ConfigError naming the field."""
        try:
            out.append(make())
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"generation_config.{name}", f.get(name, getattr(gen, name, None)),
                              f"transformers refuses it: {' '.join(str(exc).split())}") from None

    if f.get("repetition_penalty", 1.0) != 1.0:
        add("repetition_penalty", lambda: RepetitionPenaltyLogitsProcessor(f["repetition_penalty"]))
    if f.get("no_repeat_ngram_size", 0) > 0:
        add("no_repeat_ngram_size", lambda: NoRepeatNGramLogitsProcessor(f["no_repeat_ngram_size"]))
    if f.get("bad_words_ids") is not None:
        add("bad_words_ids", lambda: NoBadWordsLogitsProcessor(f["bad_words_ids"], eos or None))
    if eos and f.get("min_length", 0) > 0:
        add("min_length", lambda: MinLengthLogitsProcessor(f["min_length"], eos, device=device))
    if eos and f.get("min_new_tokens", 0) > 0:
        add("min_new_tokens", lambda: MinNewTokensLengthLogitsProcessor(prompt_tokens, f["min_new_tokens"], eos,
                                                                        device=device))
    if f.get("suppress_tokens") is not None:
        add("suppress_tokens", lambda: SuppressTokensLogitsProcessor(f["suppress_tokens"], device=device))
    if f.get("sequence_bias") is not None:
        add("sequence_bias", lambda: SequenceBiasLogitsProcessor(f["sequence_bias"]))
    out.extend(options.logits_processor)
    if options.sampling:
        if gen.temperature != 1.0:
            add("temperature", lambda: TemperatureLogitsWarper(gen.temperature))
        if gen.top_k is not None:
            add("top_k", lambda: TopKLogitsWarper(gen.top_k))
        if gen.top_p is not None and gen.top_p < 1.0:
            add("top_p", lambda: TopPLogitsWarper(gen.top_p))
        if f.get("min_p") is not None:
            add("min_p", lambda: MinPLogitsWarper(f["min_p"]))
        if f.get("typical_p", 1.0) < 1.0:
            add("typical_p", lambda: TypicalLogitsWarper(f["typical_p"]))
        if 0.0 < f.get("epsilon_cutoff", 0.0) < 1.0:
            add("epsilon_cutoff", lambda: EpsilonLogitsWarper(f["epsilon_cutoff"]))
        if 0.0 < f.get("eta_cutoff", 0.0) < 1.0:
            add("eta_cutoff", lambda: EtaLogitsWarper(f["eta_cutoff"], device=device))
    if f.get("renormalize_logits"):
        add("renormalize_logits", LogitNormalization)
    return out


class TokenChooser:
    """Chooses each next token of one generation: the processors over the sequence so far (prompt
    included, as ``model.generate`` passes it), then argmax, or a draw from the softmax with the
    sampler's own generator."""

    def __init__(self, processors: LogitsProcessorList, sampling: bool, generator: torch.Generator | None,
                 prompt: torch.Tensor, max_new_tokens: int) -> None:
        self.processors = processors
        self.sampling = sampling
        self.generator = generator
        self._sequence: torch.Tensor | None = None
        self._length = prompt.shape[1]
        if processors:  # the processors see the whole sequence; kept in one buffer, written in place
            self._sequence = torch.empty(1, self._length + max_new_tokens, dtype=torch.long, device=prompt.device)
            self._sequence[:, : self._length] = prompt

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token ``[1, 1]`` for the last position's ``logits`` ``[1, vocab]``."""
        scores = logits
        if self._sequence is not None:
            scores = self.processors(self._sequence[:, : self._length], logits.float())
        if self.sampling:
            token = torch.multinomial(scores.float().softmax(dim=-1), 1, generator=self.generator)
        else:
            token = scores.argmax(dim=-1, keepdim=True)
        if self._sequence is not None:
            self._sequence[:, self._length] = token[:, 0]
            self._length += 1
        return token
