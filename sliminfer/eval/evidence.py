"""Where pruning dropped the evidence: the layer after which an answer's prompt tokens were gone.

Why: "the pruned config missed 2 needles" is not actionable; "the needle's tokens were pruned after
layer 22 (budget 1024) at depth 0.25" says which layer or budget of the schedule to change. The
prefill reports each layer's kept ORIGINAL positions, so a span's survival is a set lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def span_tokens(tokenizer: object, text: str, start: int, end: int) -> list[int] | None:
    """Indices of the tokens of ``text`` overlapping characters ``start:end`` (None if the tokenizer
    cannot report offsets)."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).get("offset_mapping")
    except (TypeError, NotImplementedError, ValueError):
        return None
    if offsets is None:
        return None
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start]


def dropped_after(kept_positions: Sequence[torch.Tensor], tokens: Sequence[int]) -> int | None:
    """The layer after which some of ``tokens`` were no longer kept, or None if every layer kept all."""
    wanted = set(tokens)
    previous = None
    for layer, kept in enumerate(kept_positions):
        if previous is None or kept.numel() != previous:  # the kept set only changes where its size does
            if not wanted.issubset(kept.tolist()):
                return layer - 1
            previous = kept.numel()
    return None


def evidence_drops(tokenizer: object, prompt: str, spans: Sequence[str],
                   kept_positions: Sequence[torch.Tensor]) -> list[int | None] | None:
    """For each span's first occurrence in ``prompt``: the layer after which it was pruned (None: kept).

    ``prompt`` must be the exact text the pipeline tokenized (no chat wrapper). Returns None when the
    tokenizer has no offsets; a span absent from the prompt is reported as kept.
    """
    out: list[int | None] = []
    for span in spans:
        start = prompt.find(span)
        tokens = span_tokens(tokenizer, prompt, start, start + len(span)) if start >= 0 else []
        if tokens is None:
            return None
        out.append(dropped_after(kept_positions, tokens))
    return out
