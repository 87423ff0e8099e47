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
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sliminfer.eval.metrics import normalize_answer

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


class GenerationTask(Task):
    """A task answered by greedy generation and scored on the text."""

    chat_template: bool = False
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)

    @abstractmethod
    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        """Score fields of one answer, each in [0, 1]."""

    def evaluate(self, pipe: SlimPipeline, sample: Sample) -> Record:
        out = pipe.generate(
            sample.prompt, max_new_tokens=self.max_new_tokens, temperature=0.0,
            stop=list(self.stop), chat_template=self.chat_template,
        )
        return {
            "prediction": out.text,
            **self.score(out.text, sample),
            "prompt_tokens": out.prompt_tokens,
            "kept_tokens": out.prefill.tokens_per_layer[-1],
            "ttft_s": round(out.ttft_s, 3),
        }

    def compare(self, record: Record, reference: Record) -> Record:
        """Whether this config gave the same (normalised) answer as the reference config."""
        same = normalize_answer(record["prediction"]) == normalize_answer(reference["prediction"])
        return {"same_answer": float(same)}


SAME_ANSWER = mean_metric("same_answer", "same answer as the reference config (%)")
