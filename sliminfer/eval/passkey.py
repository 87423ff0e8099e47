"""Classic passkey retrieval (Mohtashami & Jaggi, 2023): one number hidden in repeated filler.

Why keep it next to the RULER needles: its filler is the same five sentences over and over, so
every filler block looks alike to the scorer and only the passkey block stands out; it isolates
"does the key block survive" from the harder semantic retrieval of essay haystacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sliminfer.eval.base import (
    EVIDENCE_KEPT,
    SAME_ANSWER,
    GenerationTask,
    Sample,
    mean_metric,
    prompt_length,
    seeded_rng,
)
from sliminfer.eval.fitting import largest_fitting
from sliminfer.eval.metrics import values_recalled

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


def passkey_prompt(key: str, before: int, after: int, chat_template: bool = False) -> str:
    """The classic prompt with ``before`` and ``after`` filler repetitions around the key line."""
    question = "What is the pass key?" if chat_template else "What is the pass key? The pass key is"
    parts = [INTRO, *[FILLER] * before, f"The pass key is {key}. Remember it. {key} is the pass key.",
             *[FILLER] * after, question]
    return " ".join(parts)


class PasskeyTask(GenerationTask):
    """Passkey retrieval over context lengths x depths; score = 1 if the key is in the answer."""

    name = "passkey"
    heatmap = ("length", "depth")
    track_evidence = True
    one_sentence_answer = True
    max_new_tokens = 10

    def __init__(self, lengths: Sequence[int] = (1024,), depths: Sequence[float] = (0.0, 0.5, 1.0),
                 samples: int = 1, seed: int = 0, chat_template: bool = False) -> None:
        self.lengths, self.depths, self.n_samples, self.seed = tuple(lengths), tuple(depths), samples, seed
        self.chat_template = chat_template
        self.metrics = (mean_metric("score", "pass key retrieved (%)"), SAME_ANSWER, EVIDENCE_KEPT)

    def describe(self) -> str:
        return f"passkey: 5-digit key in repeated filler, chat template {'on' if self.chat_template else 'off'}, greedy"

    def samples(self, pipe: SlimPipeline) -> list[Sample]:
        count = prompt_length(pipe, self.chat_template)
        out = []
        for length in self.lengths:
            for i in range(self.n_samples):
                key = str(seeded_rng(self.seed, self.name, length, i).randint(10_000, 99_999))
                for depth in self.depths:
                    split = lambda n: (round(depth * n), n - round(depth * n))  # noqa: E731
                    total = largest_fitting(lambda n: passkey_prompt(key, *split(n), self.chat_template),
                                            count, length, length // 4)
                    before, after = split(total)
                    prompt = passkey_prompt(key, before, after, self.chat_template)
                    actual = round(before / total, 4) if total else 0.0
                    meta = {"length": length, "depth": depth, "depth_actual": actual}
                    out.append(Sample(f"L{length}-d{depth:.2f}-i{i}", prompt, (key,), meta))
        return out

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"score": values_recalled(prediction, sample.answers)}
