"""RULER-style needle in a haystack: single, multi-key, multi-value and multi-query variants.

Why these four: a single needle only shows that the block holding the answer survives pruning;
distractor keys (multi-key) test that the scorer keeps the RIGHT block, several values of one key
(multi-value) and several queried keys (multi-query) test that more than one distant block survives
a budget. Needles follow RULER's format ("One of the special magic numbers for {adjective-noun} is:
{7-digit number}.", or a UUID), keys come from wonderwords' word lists, and the haystack is
Paul Graham's essays cut at sentence boundaries.
"""

from __future__ import annotations

import functools
import importlib.resources
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from sliminfer.eval.base import (
    EVIDENCE_KEPT,
    SAME_ANSWER,
    GenerationTask,
    Sample,
    mean_metric,
    prompt_length,
    seeded_rng,
)
from sliminfer.eval.fitting import boundary_depth, insertion_index, largest_fitting
from sliminfer.eval.metrics import values_recalled

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline

Variant = Literal["single", "multikey", "multivalue", "multiquery"]
ValueKind = Literal["number", "uuid"]
VARIANTS: tuple[str, ...] = get_args(Variant)
VALUE_KINDS: tuple[str, ...] = get_args(ValueKind)


@functools.lru_cache(maxsize=1)
def key_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adjectives, nouns) from wonderwords' lists: lower-case alphabetic words, profanity removed."""
    assets = importlib.resources.files("wonderwords") / "assets"

    def read(name: str) -> set[str]:
        return {w.strip() for w in (assets / name).read_text(encoding="utf-8").splitlines() if w.strip()}

    banned = read("profanitylist.txt")

    def clean(words: set[str]) -> tuple[str, ...]:
        return tuple(sorted(w for w in words if w.isalpha() and w.islower() and w not in banned))

    return clean(read("adjectivelist.txt")), clean(read("nounlist.txt"))


@functools.lru_cache(maxsize=1)
def essay_sentences() -> tuple[str, ...]:
    """The essays split into sentences (cached: ~31k sentences, split once per process)."""
    from sliminfer.assets.texts import essay_text, split_sentences

    return tuple(split_sentences(essay_text()))


def piece_lengths(tokenizer: object, pieces: Sequence[str]) -> list[int]:
    """Token counts of text pieces (each as it appears after a space in running text)."""
    if not pieces:
        return []
    return [len(ids) for ids in tokenizer([" " + p for p in pieces], add_special_tokens=False)["input_ids"]]


@dataclass(frozen=True)
class NeedlePrompt:
    """A built prompt and where its needles went (the tests check these)."""

    text: str
    needles: tuple[str, ...]  # needle sentences, the target (first queried) one first
    values: tuple[str, ...]  # what the answer must contain
    haystack: tuple[str, ...]  # filler sentences used, in order, without needles
    target_boundary: int  # the target needle sits just before haystack[target_boundary]
    depth: float  # share of the haystack's tokens before the target needle


class NeedleBuilder:
    """Builds one needle prompt fitted to a token length; every random choice comes from ``rng``."""

    def __init__(self, variant: Variant, value_kind: ValueKind, n_needles: int = 4,
                 chat_template: bool = False) -> None:
        self.variant, self.value_kind, self.chat = variant, value_kind, chat_template
        self.n = 1 if variant == "single" else n_needles
        self.kind = "number" if value_kind == "number" else "uuid"

    def _value(self, rng: random.Random) -> str:
        if self.value_kind == "number":
            return str(rng.randint(1_000_000, 9_999_999))
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def _keys_values(self, rng: random.Random) -> tuple[list[str], list[str]]:
        adjectives, nouns = key_words()
        keys: list[str] = []
        while len(keys) < (1 if self.variant == "multivalue" else self.n):
            key = f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
            if key not in keys:
                keys.append(key)
        keys = keys * self.n if self.variant == "multivalue" else keys
        values: list[str] = []
        while len(values) < self.n:
            value = self._value(rng)
            if value not in values:
                values.append(value)
        return keys, values

    def _question(self, keys: list[str]) -> tuple[str, str]:
        kind, kinds = self.kind, self.kind + "s"
        if self.variant in ("single", "multikey"):
            subject, verb, noun, ask = keys[0], "is", kind, "What is the"
        elif self.variant == "multivalue":
            subject, verb, noun, ask = keys[0], "are", kinds, "What are all the"
        else:
            subject = ", ".join(keys[:-1]) + f" and {keys[-1]}"
            verb, noun, ask = "are", kinds, "What are the"
        tail = f"special magic {noun} for {subject} mentioned in the provided text"
        return f"{ask} {tail}?", f"The {tail} {verb}"

    def build(self, sentences: Sequence[str], count: Callable[[str], int], tokenizer: object,
              length: int, depth: float, rng: random.Random) -> NeedlePrompt:
        """A prompt of at most ``length`` tokens (as ``count`` measures) with the target at ``depth``."""
        keys, values = self._keys_values(rng)
        needles = [f"One of the special magic {self.kind}s for {k} is: {v}." for k, v in zip(keys, values)]
        other_depths = [rng.random() for _ in needles[1:]]
        start = rng.randrange(len(sentences))
        window: list[str] = []
        chars = 0
        while chars < 6 * length and len(window) < len(sentences):  # >= length tokens of English
            window.append(sentences[(start + len(window)) % len(sentences)])
            chars += len(window[-1]) + 1
        tokens = piece_lengths(tokenizer, window)
        question, answer_prefix = self._question(keys)
        intro = (f"Some special magic {self.kind}s are hidden within the following text. Make sure to memorize "
                 f"them. I will quiz you about the {self.kind}s afterwards.")
        query = question if self.chat else f"{question} {answer_prefix}"

        def place(k: int) -> tuple[str, int]:
            target = insertion_index(tokens[:k], depth)
            slots: dict[int, list[str]] = {target: [needles[0]]}
            for needle, d in zip(needles[1:], other_depths):
                b = insertion_index(tokens[:k], d)
                if b == target and k > 0:  # keep the target's boundary its own
                    b = target + 1 if target < k else target - 1
                slots.setdefault(b, []).append(needle)
            parts = [p for i in range(k + 1) for p in (*slots.get(i, ()), *window[i:i + 1])]
            return f"{intro}\n{' '.join(parts)}\n{query}", target

        k = largest_fitting(lambda k: place(k)[0], count, length, len(window))
        text, target = place(k)
        return NeedlePrompt(text, tuple(needles), tuple(values[:1] if self.variant == "multikey" else values),
                            tuple(window[:k]), target, boundary_depth(tokens[:k], target))


class NeedleTask(GenerationTask):
    """Needle retrieval over a grid of context lengths x depths; score = share of values recalled."""

    rows = ("length",)
    heatmap = ("length", "depth")
    track_evidence = True
    one_sentence_answer = True

    def __init__(self, variant: Variant = "single", value_kind: ValueKind = "number", lengths: Sequence[int] = (1024,),
                 depths: Sequence[float] = (0.0, 0.5, 1.0), samples: int = 1, seed: int = 0,
                 chat_template: bool = False, sentences: Sequence[str] | None = None, n_needles: int = 4) -> None:
        self.builder = NeedleBuilder(variant, value_kind, n_needles, chat_template)
        self.name = f"needle_{variant}" + ("_uuid" if value_kind == "uuid" else "")
        self.lengths, self.depths, self.n_samples, self.seed = tuple(lengths), tuple(depths), samples, seed
        self.chat_template = chat_template
        self._sentences = sentences
        per_value = 12 if value_kind == "number" else 40
        restated = 32 if chat_template else 0  # in chat form the model first restates the question
        self.max_new_tokens = restated + (per_value * self.builder.n if variant in ("multivalue", "multiquery")
                                          else per_value)
        self.metrics = (mean_metric("score", "values recalled (%)"), SAME_ANSWER, EVIDENCE_KEPT)

    def describe(self) -> str:
        return (f"{self.name}: {self.builder.n} needle(s), {self.builder.value_kind} values, "
                f"chat template {'on' if self.chat_template else 'off'}, greedy, {self.max_new_tokens} new tokens max")

    def samples(self, pipe: SlimPipeline) -> list[Sample]:
        sentences = self._sentences if self._sentences is not None else essay_sentences()
        count = prompt_length(pipe, self.chat_template)
        out = []
        for length in self.lengths:
            for i in range(self.n_samples):
                for depth in self.depths:
                    rng = seeded_rng(self.seed, self.name, length, i)  # same needles/haystack at every depth
                    built = self.builder.build(sentences, count, pipe.tokenizer, length, depth, rng)
                    meta = {"length": length, "depth": depth, "depth_actual": round(built.depth, 4)}
                    out.append(Sample(f"L{length}-d{depth:.2f}-i{i}", built.text, built.values, meta))
        return out

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"score": values_recalled(prediction, sample.answers)}
