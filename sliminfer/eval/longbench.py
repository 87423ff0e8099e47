"""LongBench from a local copy: the public jsonl format and the official per-task metrics.

Why a loader and not a download: LongBench is on no reachable index, but users who have it (and a
Llama-3.1-8B or Qwen2.5-7B checkpoint) should be able to reproduce the paper's table with the same
harness that checks every strategy. Each line of ``<dataset>.jsonl`` holds ``input, context, answers,
length, dataset, all_classes, _id``. A sample's score is its best score over the answers; a task's
score is the mean times 100. Prompts come from the user's copy of LongBench's ``dataset2prompt.json``
(pass ``prompts=``) so numbers match the paper; without it a plain context-then-input prompt is used.
Chinese tasks need jieba word segmentation for their official metrics and are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sliminfer.core.errors import ConfigError, InputError
from sliminfer.eval.base import SAME_ANSWER, GenerationTask, Sample, mean_metric
from sliminfer.eval.metrics import (
    classification_accuracy,
    code_similarity,
    count_accuracy,
    qa_f1,
    retrieval_accuracy,
    rouge_l,
)

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline

Scorer = Callable[[str, str, Sequence[str]], float]


def _ignore_classes(metric: Callable[[str, str], float]) -> Scorer:
    return lambda prediction, reference, classes: metric(prediction, reference)


#: dataset -> (metric name, scoring function); LongBench's English, synthetic and code tasks
METRICS: dict[str, tuple[str, Scorer]] = {
    **{name: ("qa_f1", _ignore_classes(qa_f1)) for name in (
        "narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "triviaqa")},
    **{name: ("rouge_l", _ignore_classes(rouge_l)) for name in ("gov_report", "qmsum", "multi_news", "samsum")},
    "trec": ("classification", classification_accuracy),
    "passage_retrieval_en": ("retrieval", _ignore_classes(retrieval_accuracy)),
    "passage_count": ("count", _ignore_classes(count_accuracy)),
    **{name: ("code_sim", _ignore_classes(code_similarity)) for name in ("lcc", "repobench-p")},
}
CHINESE = frozenset({"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"})
#: answer length limits per dataset (LongBench's published settings)
MAX_NEW_TOKENS: dict[str, int] = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "hotpotqa": 32, "2wikimqa": 32, "musique": 32,
    "gov_report": 512, "qmsum": 512, "multi_news": 512, "trec": 64, "triviaqa": 32, "samsum": 128,
    "passage_count": 32, "passage_retrieval_en": 32, "lcc": 64, "repobench-p": 64,
}
#: few-shot / completion tasks: LongBench feeds them without the chat template and scores the first line
RAW_PROMPT = frozenset({"trec", "triviaqa", "samsum", "lcc", "repobench-p"})
FIRST_LINE_ONLY = frozenset({"trec", "triviaqa", "samsum"})


def base_dataset(name: str) -> str:
    """``hotpotqa_e`` (LongBench-E) -> ``hotpotqa``."""
    return name.removesuffix("_e")


def load_longbench(path: str | Path) -> list[dict[str, Any]]:
    """Read a LongBench jsonl file, checking that each line has the public format's fields."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--data: {str(path)!r} is not a file (give a LongBench <dataset>.jsonl)")
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            missing = {"input", "context", "answers"} - rec.keys()
            if missing:
                raise InputError(f"{path}:{number}: missing LongBench field(s) {sorted(missing)}")
            records.append(rec)
    return records


def metric_of(dataset: str) -> tuple[str, Scorer]:
    """``(metric name, scoring function)`` of a LongBench dataset; unknown and Chinese tasks are refused."""
    name = base_dataset(dataset)
    if name in CHINESE:
        raise ConfigError("dataset", dataset, "Chinese LongBench tasks need jieba segmentation; not supported")
    if name not in METRICS:
        raise ConfigError("dataset", dataset, f"unknown LongBench task; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def score_longbench(dataset: str, prediction: str, answers: Sequence[str], classes: Sequence[str] = ()) -> float:
    """A sample's official score in [0, 1], as LongBench's ``eval.py`` scores it: the first line only
    for trec, triviaqa and samsum, then the best over its answers (0 for none)."""
    scorer = metric_of(dataset)[1]
    if base_dataset(dataset) in FIRST_LINE_ONLY:
        prediction = prediction.lstrip("\n").split("\n")[0]
    return max((scorer(prediction, answer, classes) for answer in answers), default=0.0)


class LongBenchTask(GenerationTask):
    """One LongBench dataset file, middle-truncated to ``max_length`` tokens as LongBench does."""

    rows = ("dataset",)
    stop = ()

    def __init__(self, path: str | Path, samples: int | None = None, max_length: int | None = None,
                 prompts: Mapping[str, str] | None = None, chat_template: bool = True) -> None:
        self.records = load_longbench(path)
        first = self.records[0] if self.records else {}
        self.dataset = str(first.get("dataset") or Path(path).stem)
        metric = metric_of(self.dataset)[0]  # unknown / Chinese tasks fail before any model work
        base = base_dataset(self.dataset)
        self.name = f"longbench_{self.dataset}"
        self.template = (prompts or {}).get(base, "{context}\n\n{input}")
        self.n_samples, self.max_length = samples, max_length
        self.max_new_tokens = MAX_NEW_TOKENS.get(base, 64)
        self.chat_template = chat_template and base not in RAW_PROMPT
        self.metrics = (mean_metric("score", f"{metric} (%)"), SAME_ANSWER)

    def describe(self) -> str:
        return f"{self.name}: LongBench {metric_of(self.dataset)[0]}, max {self.max_new_tokens} new tokens"

    def samples(self, pipe: SlimPipeline) -> list[Sample]:
        # room for the answer and a chat wrapper (LongBench's own limits are per model, e.g. 127,500 for 128k)
        limit = self.max_length or pipe.adapter.max_positions - self.max_new_tokens - 64
        out = []
        for i, rec in enumerate(self.records[: self.n_samples]):
            prompt = self.template.format(context=rec["context"], input=rec["input"])
            ids = pipe.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if len(ids) > limit:  # keep the head and the tail, where instructions and questions sit
                half = limit // 2
                prompt = pipe.tokenizer.decode(ids[:half], skip_special_tokens=True) + pipe.tokenizer.decode(
                    ids[-half:], skip_special_tokens=True)
            meta = {"dataset": self.dataset, "length": rec.get("length")}
            out.append(Sample(str(rec.get("_id", i)), prompt, tuple(rec["answers"]), meta,
                              {"all_classes": tuple(rec.get("all_classes") or ())}))
        return out

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        return {"score": score_longbench(self.dataset, prediction, sample.answers, sample.extra["all_classes"])}
