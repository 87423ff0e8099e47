"""Question answering over long context: HotpotQA with distractors, SQuAD with padding paragraphs.

Why: needles are synthetic; real questions need the model to find and read one or two relevant
paragraphs among many plausible ones, which is what a pruning scorer must not get wrong. The same
question is asked at every length (only the padding grows), so the length axis compares like with
like. Scores are SQuAD's token F1 and exact match against any acceptable answer.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sliminfer.eval.base import (
    AGREEMENT_F1,
    SAME_ANSWER,
    GenerationTask,
    Sample,
    mean_metric,
    prompt_length,
    seeded_rng,
)
from sliminfer.eval.fitting import largest_fitting
from sliminfer.eval.metrics import best_over, exact_match, token_f1

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


@dataclass(frozen=True)
class QAItem:
    """One question: the passages that answer it, its own distractors, acceptable answers."""

    question: str
    answers: tuple[str, ...]
    gold: tuple[Passage, ...]
    distractors: tuple[Passage, ...] = ()


@functools.lru_cache(maxsize=1)
def hotpotqa_items() -> tuple[QAItem, ...]:
    """HotpotQA dev (distractor setting): the supporting paragraphs are gold, the others distractors."""
    from sliminfer.assets.texts import hotpotqa_path

    items = []
    for rec in json.loads(hotpotqa_path().read_text(encoding="utf-8")):
        gold_titles = {title for title, _ in rec["supporting_facts"]}
        paragraphs = [Passage(title, "".join(sentences).strip()) for title, sentences in rec["context"]]
        items.append(QAItem(rec["question"], (rec["answer"],), tuple(p for p in paragraphs if p.title in gold_titles),
                            tuple(p for p in paragraphs if p.title not in gold_titles)))
    return tuple(items)


@functools.lru_cache(maxsize=1)
def squad_items() -> tuple[QAItem, ...]:
    """SQuAD v2 dev, answerable questions only; the question's paragraph is the one gold passage."""
    from sliminfer.assets.texts import squad_path

    items = []
    for article in json.loads(squad_path().read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            gold = (Passage(article["title"].replace("_", " "), paragraph["context"].strip()),)
            for qa in paragraph["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                if answers:
                    items.append(QAItem(qa["question"], answers, gold))
    return tuple(items)


def qa_prompt(passages: Sequence[Passage], question: str, chat_template: bool) -> str:
    """Passages, then the question; without the chat template the prompt ends with 'Answer:'."""
    body = "\n\n".join(f"Passage {i + 1}: {p.title}\n{p.text}" for i, p in enumerate(passages))
    ask = "Answer the question using the passages above. Reply with a short phrase only, no explanation."
    return f"{body}\n\n{ask}\nQuestion: {question}" + ("" if chat_template else "\nAnswer:")


class PassageQATask(GenerationTask):
    """Shared logic: pick questions, pad with other items' passages to each length, score F1/EM."""

    max_new_tokens = 24
    stop = ()  # SmolLM2 often opens with a newline; the answer is the first non-empty line

    def __init__(self, lengths: Sequence[int] = (1024,), samples: int = 4, seed: int = 0,
                 chat_template: bool = True, items: Sequence[QAItem] | None = None) -> None:
        self.lengths, self.n_samples, self.seed, self.chat_template = tuple(lengths), samples, seed, chat_template
        self._items = items
        self.metrics = (mean_metric("f1", "token F1 (%)"), mean_metric("em", "exact match (%)"), SAME_ANSWER,
                        AGREEMENT_F1)

    def describe(self) -> str:
        chat = "on" if self.chat_template else "off"
        return f"{self.name}: token F1 / EM (SQuAD normalisation), chat template {chat}, greedy"

    def all_items(self) -> Sequence[QAItem]:
        raise NotImplementedError

    def samples(self, pipe: SlimPipeline) -> list[Sample]:
        items = self._items if self._items is not None else self.all_items()
        count = prompt_length(pipe, self.chat_template)
        picks = seeded_rng(self.seed, self.name).sample(range(len(items)), min(self.n_samples, len(items)))
        out = []
        for i, index in enumerate(picks):  # the same question at every length
            item = items[index]
            for length in self.lengths:
                rng = seeded_rng(self.seed, self.name, length, i)
                others = self._padding(items, item, rng, 8 * length)
                order = {p: rng.random() for p in (*item.gold, *others)}  # a passage keeps its slot as k grows

                def build(k: int) -> str:
                    return qa_prompt(sorted((*item.gold, *others[:k]), key=order.__getitem__), item.question,
                                     self.chat_template)

                k = largest_fitting(build, count, length, len(others))
                shown = sorted((*item.gold, *others[:k]), key=order.__getitem__)
                depth = shown.index(item.gold[0]) / max(len(shown) - 1, 1)
                meta = {"length": length, "passages": len(shown), "gold_depth": round(depth, 3)}
                out.append(Sample(f"L{length}-i{i}", build(k), item.answers, meta))
        return out

    @staticmethod
    def _padding(items: Sequence[QAItem], item: QAItem, rng: random.Random, chars: int) -> list[Passage]:
        """The item's own distractors, then random other items' passages (never one titled like a gold)."""
        taken = {p.title for p in (*item.gold, *item.distractors)}
        out, total = list(item.distractors), sum(len(p.text) for p in item.distractors)
        for index in rng.sample(range(len(items)), len(items)):
            if total >= chars:
                break
            for p in (*items[index].gold, *items[index].distractors):
                if p.title not in taken:
                    taken.add(p.title)
                    out.append(p)
                    total += len(p.text)
        return out

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        answer = self.answer(prediction)
        return {"f1": best_over(token_f1, answer, sample.answers), "em": best_over(exact_match, answer, sample.answers)}


class HotpotQATask(PassageQATask):
    """HotpotQA: two gold paragraphs among their own eight distractors, then other questions' paragraphs."""

    name = "hotpotqa"

    def all_items(self) -> Sequence[QAItem]:
        return hotpotqa_items()


class SquadTask(PassageQATask):
    """SQuAD v2 (answerable): the question's paragraph among paragraphs of other articles."""

    name = "squad"

    def all_items(self) -> Sequence[QAItem]:
        return squad_items()
