"""Language-modelling agreement on essay text: perplexity and greedy-token agreement.

Why: needles and QA only see a few answer tokens; perplexity of a real continuation and the
agreement of 64 greedily decoded tokens show whether pruning the context changes what the model
predicts everywhere, not just on retrieval. Pruning applies to the context (the prefill); the
continuation is then teacher-forced one token at a time through ``decode_step``, exactly as decoding
would see it. One prefill serves both measurements: its cache is copied for the greedy run.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sliminfer.eval.base import Metric, Record, Sample, Task, mean_metric, seeded_rng

if TYPE_CHECKING:
    from sliminfer.cache.base import KVCacheManager
    from sliminfer.core.pipeline import SlimPipeline


def _perplexity(records: Sequence[Record]) -> float:
    """Corpus perplexity of a group: exp(total negative log-likelihood / total tokens)."""
    tokens = sum(r["n_tokens"] for r in records)
    return math.exp(sum(r["nll_sum"] for r in records) / tokens) if tokens else math.nan


def teacher_forced(pipe: SlimPipeline, logits: torch.Tensor, cache: KVCacheManager, position: int,
                   continuation: Sequence[int]) -> tuple[float, int]:
    """(summed NLL of ``continuation``, how many of its tokens were the argmax) after a prefill."""
    nll, hits = 0.0, 0
    for i, token in enumerate(continuation):
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)
        nll -= float(log_probs[token])
        hits += int(log_probs.argmax()) == token
        if i + 1 < len(continuation):
            logits = pipe.forward.decode_step(torch.tensor([[token]], device=pipe.device), position + i, cache)
    return nll, hits


def greedy_continuation(pipe: SlimPipeline, logits: torch.Tensor, cache: KVCacheManager, position: int,
                        n_tokens: int) -> list[int]:
    """``n_tokens`` greedy tokens after a prefill (EOS is not a stop here: positions stay aligned)."""
    tokens: list[int] = []
    for i in range(n_tokens):
        token = logits.argmax(dim=-1, keepdim=True)
        tokens.append(int(token))
        if i + 1 < n_tokens:
            logits = pipe.forward.decode_step(token, position + i, cache)
    return tokens


class LMAgreementTask(Task):
    """Perplexity of the true continuation and greedy agreement with the reference config."""

    name = "lm_agreement"

    def __init__(self, lengths: Sequence[int] = (1024,), samples: int = 2, seed: int = 0, continuation: int = 64,
                 text: str | None = None) -> None:
        self.lengths, self.n_samples, self.seed, self.continuation = tuple(lengths), samples, seed, continuation
        self._text = text
        self.metrics = (
            Metric("ppl", "perplexity of the true continuation", _perplexity, higher_is_better=False,
                   relative=True),
            mean_metric("top1", "teacher-forced top-1 accuracy (%)"),
            mean_metric("greedy_agreement", "greedy tokens equal to the reference config's, position-wise (%)"),
            mean_metric("greedy_prefix", "greedy tokens before the first difference from the reference", scale=1.0),
        )

    def describe(self) -> str:
        return f"lm_agreement: essay text, {self.continuation}-token continuations, one prefill per sample and config"

    def samples(self, pipe: SlimPipeline) -> list[Sample]:
        from sliminfer.assets.texts import essay_text

        text = self._text if self._text is not None else essay_text()
        out = []
        for length in self.lengths:
            context = min(length, pipe.adapter.max_positions - self.continuation)
            for i in range(self.n_samples):
                offset = seeded_rng(self.seed, self.name, length, i).randrange(len(text))
                start = re.compile(r"[.!?]\s+").search(text, offset)  # begin at a sentence start
                offset = start.end() if start else 0
                chars = 8 * (context + self.continuation)
                ids = pipe.tokenizer((text + " " + text)[offset:offset + chars], add_special_tokens=False)["input_ids"]
                cont = tuple(ids[context:context + self.continuation])
                meta = {"length": length}
                out.append(Sample(f"L{length}-i{i}", tuple(ids[:context]), (), meta, {"continuation": cont}))
        return out

    def evaluate(self, pipe: SlimPipeline, sample: Sample) -> Record:
        ids = torch.tensor([sample.prompt], device=pipe.device)
        cont = list(sample.extra["continuation"])
        pre = pipe.prefill(ids, reserve_tokens=len(cont))
        greedy_cache = copy.deepcopy(pre.cache)
        position = pre.next_position
        nll, hits = teacher_forced(pipe, pre.logits, pre.cache, position, cont)
        greedy = greedy_continuation(pipe, pre.logits, greedy_cache, position, len(cont))
        return {
            "nll_sum": nll, "n_tokens": len(cont), "top1": hits / len(cont), "greedy_ids": greedy,
            "prompt_tokens": pre.prompt_tokens, "kept_tokens": pre.tokens_per_layer[-1], "ttft_s": round(pre.ttft_s, 3),
        }

    def compare(self, record: Record, reference: Record) -> Record:
        a, b = record["greedy_ids"], reference["greedy_ids"]
        prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return {"greedy_agreement": sum(x == y for x, y in zip(a, b)) / max(len(b), 1), "greedy_prefix": prefix}
