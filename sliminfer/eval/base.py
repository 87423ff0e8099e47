"""What every evaluation task is made of: samples, per-sample evaluation, metrics.

Why this split: the runner must give every config the SAME samples (built once, from fixed seeds),
skip the (config, sample) pairs a previous run finished, and aggregate any task the same way; a task
only says how to build its samples, how to score one answer and which numbers to report.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sliminfer.eval.evidence import evidence_drops
from sliminfer.eval.metrics import normalize_answer, token_f1

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline

Record = dict[str, Any]


@dataclass(frozen=True)
class Sample:
    """One prompt with its references.

    Attributes:
        key: readable id inside the task (``"L1024-d0.50-i0"``).
        prompt: text, or token ids where the task works on tokens.
        answers: acceptable answers (or the values that must all appear).
        meta: grouping fields copied into every record (``length``, ``depth``, ...).
        extra: task-private payload that is not recorded (e.g. continuation token ids).
    """

    key: str
    prompt: str | tuple[int, ...]
    answers: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The key plus a digest of the content, so a changed generator never reuses old results."""
        blob = json.dumps([self.prompt, self.answers, dict(self.extra)], sort_keys=True, default=list)
        return f"{self.key}#{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Metric:
    """A reported number: ``aggregate`` turns a group's records into one value."""

    name: str
    label: str
    aggregate: Callable[[Sequence[Record]], float]
    higher_is_better: bool = True
    #: report differences to the reference as a relative change (perplexity) instead of points
    relative: bool = False


def mean_metric(name: str, label: str, scale: float = 100.0) -> Metric:
    """The mean of the record field ``name``, times ``scale`` (percent by default)."""

    def aggregate(records: Sequence[Record]) -> float:
        values = [r[name] for r in records if r.get(name) is not None]
        return scale * sum(values) / len(values) if values else math.nan

    return Metric(name, label, aggregate)


def prompt_length(pipe: SlimPipeline, chat_template: bool) -> Callable[[str], int]:
    """Token count of a text prompt exactly as ``pipe.generate`` will see it (chat wrapper included)."""
    return lambda text: int(pipe.encode(text, chat_template).shape[1])


def seeded_rng(*parts: object) -> random.Random:
    """A generator seeded from ``parts`` through sha256: stable across processes and Python versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Task(ABC):
    """An evaluation task. Subclasses set ``name`` and ``metrics`` and implement two methods."""

    name: str
    metrics: tuple[Metric, ...]
    #: meta fields that form the rows of the summary tables
    rows: tuple[str, ...] = ("length",)
    #: (x, y) meta fields of a per-config heatmap, or None for line plots
    heatmap: tuple[str, str] | None = None

    @abstractmethod
    def samples(self, pipe: SlimPipeline) -> list[Sample]:
        """Build the samples; ``pipe`` gives the tokenizer (prompts are fitted to token lengths)."""

    @abstractmethod
    def evaluate(self, pipe: SlimPipeline, sample: Sample) -> Record:
        """Run one sample through one pipeline; return the record fields (scores included)."""

    def compare(self, record: Record, reference: Record) -> Record:
        """Fields derived from the reference config's record of the same sample (none by default)."""
        return {}

    def describe(self) -> str:
        """One line for the report header."""
        return self.name

    def settings(self) -> dict[str, Any]:
        """Settings that change a record without changing the prompt (e.g. the answer length)."""
        return {}

    @property
    def digest(self) -> str:
        """Identifies :meth:`settings` in result files, so changing one re-runs the samples."""
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:10]


class GenerationTask(Task):
    """A task answered by greedy generation and scored on the text."""

    chat_template: bool = False
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    #: record after which layer each answer's tokens in the prompt were pruned (needle-type tasks,
    #: where every answer occurs once in the prompt); needs a tokenizer with offsets, no chat wrapper
    track_evidence: bool = False
    #: retrieval answers ("1234567.") run on into text copied from the prompt; compare only the first sentence
    one_sentence_answer: bool = False

    @abstractmethod
    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        """Score fields of one generated text, each in [0, 1]."""

    def answer(self, prediction: str) -> str:
        """The part of the generated text that is the answer: its first non-empty line (a small model
        often starts with a newline, or runs on into a new line of its own), or that line's first
        sentence where ``one_sentence_answer`` is set."""
        line = next((line.strip() for line in prediction.splitlines() if line.strip()), "")
        match = re.match(r".*?[.!?](?=\s|$)", line) if self.one_sentence_answer else None
        return match.group(0) if match else line

    def evaluate(self, pipe: SlimPipeline, sample: Sample) -> Record:
        out = pipe.generate(
            sample.prompt, max_new_tokens=self.max_new_tokens, temperature=0.0,
            stop=list(self.stop), chat_template=self.chat_template,
        )
        record = {
            "prediction": out.text,
            **self.score(out.text, sample),
            "prompt_tokens": out.prompt_tokens,
            "kept_tokens": out.prefill.tokens_per_layer[-1],
            "ttft_s": round(out.ttft_s, 3),
        }
        if self.track_evidence and not self.chat_template and isinstance(sample.prompt, str):
            drops = evidence_drops(pipe.tokenizer, sample.prompt, sample.answers, out.prefill.kept_positions)
            if drops is not None:
                record["evidence_dropped_after"] = drops
                record["evidence_kept"] = sum(d is None for d in drops) / len(drops) if drops else 1.0
        return record

    def settings(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "stop": list(self.stop), "evidence": self.track_evidence}

    def compare(self, record: Record, reference: Record) -> Record:
        """Agreement with the reference config's answer: identical (normalised), and token F1."""
        mine, theirs = self.answer(record["prediction"]), self.answer(reference["prediction"])
        return {"same_answer": float(normalize_answer(mine) == normalize_answer(theirs)),
                "agreement_f1": token_f1(mine, theirs)}


SAME_ANSWER = mean_metric("same_answer", "same answer as the reference config (%)")
AGREEMENT_F1 = mean_metric("agreement_f1", "token F1 against the reference config's answer (%)")
EVIDENCE_KEPT = mean_metric("evidence_kept", "answer tokens kept through every layer (%)")
