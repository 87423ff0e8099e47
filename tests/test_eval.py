"""The evaluation harness: scoring functions, prompt generators, resumable runs, reports.

Why: a wrong metric or a needle that is not where the table says silently changes every accuracy
claim. Scores are checked against hand-computed cases; generators against their promises (needle
present once, at the requested depth on a sentence boundary, prompt within the requested length,
deterministic); the runner against interruption. Fast tests use a tiny random model with a byte
tokenizer; the few ``real_weights`` tests use SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from sliminfer import SlimPipeline, load_config
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.eval import metrics as m
from sliminfer.eval.base import Sample
from sliminfer.eval.evidence import dropped_after, evidence_drops
from sliminfer.eval.fitting import insertion_index, largest_fitting
from sliminfer.eval.lm_agreement import LMAgreementTask, teacher_forced
from sliminfer.eval.longbench import LongBenchTask, load_longbench, score_longbench
from sliminfer.eval.needles import VARIANTS, NeedleBuilder, NeedleTask, key_words
from sliminfer.eval.passkey import PasskeyTask, passkey_prompt
from sliminfer.eval.qa import Passage, QAItem, SquadTask, qa_prompt
from sliminfer.eval.report import write_report
from sliminfer.eval.runner import (
    EvalConfig,
    build_pipelines,
    config_digests,
    read_records,
    resolve_configs,
    run_task,
)
from sliminfer.testing.tiny_models import tiny_model


class ByteTokenizer:
    """One token per UTF-8 byte (ids 0-255 fit the tiny models' vocabulary); no chat template."""

    eos_token_id = None

    def __call__(self, text, add_special_tokens=False):
        encode = lambda t: list(t.encode("utf-8"))  # noqa: E731
        return {"input_ids": [encode(t) for t in text] if isinstance(text, list) else encode(text)}

    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


SENTENCES = tuple(f"Sentence {i} is about topic {i % 7}." for i in range(600))
PRUNED = {"pruning": {"scorer": {"name": "attention_unit", "block_size": 16, "unit_size": 8},
                      "schedule": {"name": "fixed", "layers": [2, 4], "budgets": [160, 96]}}}


def byte_count(text: str) -> int:
    return len(text.encode("utf-8"))


@pytest.fixture(scope="module")
def tiny_runs():
    configs = [EvalConfig("origin", load_config({})), EvalConfig("pruned", load_config(PRUNED))]
    return configs, build_pipelines(configs, tiny_model("llama"), ByteTokenizer())


# --- scoring functions, hand-computed -----------------------------------------------------------


def test_normalize_and_exact_match():
    assert m.normalize_answer("The  Cat's hat!") == "cats hat"
    assert m.normalize_answer("An apple, a pear") == "apple pear"
    assert m.exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert m.exact_match("Eiffel", "Eiffel tower") == 0.0


def test_token_f1():
    # "the" is dropped: pred [cat, sat, on, mat], ref [cat, on, mat] -> P 3/4, R 1
    assert m.token_f1("the cat sat on the mat", "cat on mat") == pytest.approx(2 * 0.75 / 1.75)
    assert m.token_f1("paris paris", "Paris") == pytest.approx(2 / 3)  # clipped counts: P 1/2, R 1
    assert m.token_f1("", "") == 1.0
    assert m.token_f1("a", "b") == 0.0  # "a" normalises to nothing
    assert m.token_f1("london", "paris") == 0.0
    assert m.best_over(m.token_f1, "new york city", ["york", "New York City"]) == 1.0
    assert m.best_over(m.token_f1, "x", []) == 0.0


def test_rouge_l():
    # the rouge package's ROUGE-L (tests/test_longbench_metrics.py pins more cases): the LCS has the 4
    # distinct words of the reference, the prediction has 5 distinct words: P 4/5, R 1
    assert m.rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(8 / 9)
    assert m.rouge_l("Hello, World!", "hello world") == 0.0  # case and punctuation kept
    assert m.rouge_l("a b c d", "d c b a") == pytest.approx(0.25)  # LCS 1 of 4 each way
    assert m.rouge_l("", "x") == 0.0


def test_fuzz_ratio_and_code_similarity():
    assert m.fuzz_ratio("kitten", "sitting") == 0.62  # difflib 8/13, rounded to whole percent
    assert m.fuzz_ratio("", "") == 1.0
    assert m.fuzz_ratio("abc", "") == 0.0
    # fences and comments are skipped: "x = foo(1)" vs "x = foo(2)" share 9 of 10 characters
    assert m.code_similarity("```python\n# comment\nx = foo(1)\n", "x = foo(2)") == pytest.approx(0.9)
    assert m.code_similarity("// only a comment", "y") == 0.0


def test_classification_retrieval_count():
    classes = ["location", "other location", "person"]
    assert m.classification_accuracy("other location", "other location", classes) == 1.0  # "location" forgiven
    assert m.classification_accuracy("person or other location", "other location", classes) == 0.5
    assert m.classification_accuracy("person", "other location", classes) == 0.0
    assert m.retrieval_accuracy("Paragraph 12", "Paragraph 12") == 1.0
    assert m.retrieval_accuracy("Paragraph 3 and 12", "Paragraph 12") == 0.5
    assert m.retrieval_accuracy("none of them", "Paragraph 12") == 0.0
    assert m.count_accuracy("There are 7 unique paragraphs: 7.", "7") == 1.0
    assert m.count_accuracy("5 or 7", "7") == 0.5
    assert m.values_recalled("1234567 and 7654321", ["1234567", "7654321", "1111111"]) == pytest.approx(2 / 3)


def test_longbench_scoring_and_loading(tmp_path):
    assert score_longbench("hotpotqa", "Paris, France", ["France", "Paris"]) == pytest.approx(2 / 3)
    assert score_longbench("hotpotqa_e", "Paris", ["France", "Paris"]) == 1.0  # LongBench-E name
    assert score_longbench("trec", "person\nlocation", ["location"], ["location", "person"]) == 0.0  # first line
    assert score_longbench("lcc", "x = 1\n", ["x = 1"]) == 1.0
    with pytest.raises(ConfigError, match="jieba"):
        score_longbench("dureader", "x", ["x"])
    with pytest.raises(ConfigError, match="unknown LongBench task"):
        score_longbench("nosuchtask", "x", ["x"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "q", "context": "c"}) + "\n")
    with pytest.raises(InputError, match="answers"):
        load_longbench(bad)


# --- fitting and prompt generators ----------------------------------------------------------------


def test_fitting_helpers():
    assert largest_fitting(lambda k: "x" * (10 + 3 * k), len, 40, 100) == 10
    with pytest.raises(InputError):
        largest_fitting(lambda k: "x" * 50, len, 40, 10)
    pieces = [10, 10, 10, 10]
    assert [insertion_index(pieces, d) for d in (0.0, 0.26, 0.5, 0.74, 1.0)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("value_kind", ["number", "uuid"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_needle_prompt_promises(variant, value_kind, depth):
    builder = NeedleBuilder(variant, value_kind)
    length = 1500
    built = builder.build(SENTENCES, byte_count, ByteTokenizer(), length, depth, random.Random(7))
    text = built.text
    assert length - max(map(len, SENTENCES)) - 1 <= byte_count(text) <= length  # fits, and is close
    for needle in built.needles:
        assert text.count(needle) == 1
    for value in built.values:
        assert text.count(value) == 1
    # the target needle starts a sentence at the requested depth
    before = text[: text.index(built.needles[0])].rstrip()
    if built.target_boundary:
        assert before.endswith(built.haystack[built.target_boundary - 1])
    else:
        assert before.endswith("afterwards.")  # right after the instructions
    step = max(map(len, SENTENCES)) / sum(map(len, built.haystack))
    assert abs(built.depth - depth) <= step
    if variant == "multikey":
        assert len(built.values) == 1 and len(built.needles) == 4
    if variant in ("multivalue", "multiquery"):
        assert len(built.values) == 4


def test_needle_deterministic_per_seed():
    builder = NeedleBuilder("multikey", "number")
    def build(seed: int) -> str:
        return builder.build(SENTENCES, byte_count, ByteTokenizer(), 1200, 0.5, random.Random(seed)).text

    assert build(3) == build(3)
    assert build(3) != build(4)
    adjectives, nouns = key_words()
    assert len(adjectives) > 500 and len(nouns) > 5000 and all(w.isalpha() for w in adjectives[:50])


def test_needle_task_same_needle_across_depths(tiny_runs):
    _, pipes = tiny_runs
    task = NeedleTask("single", "number", (600, 900), (0.0, 1.0), samples=2, sentences=SENTENCES)
    samples = task.samples(pipes[0])
    assert len(samples) == 8 and len({s.id for s in samples}) == 8
    by_key = {s.key: s for s in samples}
    assert by_key["L600-d0.00-i0"].answers == by_key["L600-d1.00-i0"].answers
    assert by_key["L600-d0.00-i0"].answers != by_key["L600-d0.00-i1"].answers
    assert [s.id for s in task.samples(pipes[0])] == [s.id for s in samples]  # fixed seeds


def test_passkey_prompts(tiny_runs):
    _, pipes = tiny_runs
    assert passkey_prompt("12345", 1, 1).count("The pass key is 12345.") == 1
    task = PasskeyTask((1000, 1500), (0.0, 0.5, 1.0))
    for sample in task.samples(pipes[0]):
        assert sample.meta["length"] - 100 <= byte_count(sample.prompt) <= sample.meta["length"]
        assert sample.prompt.count(f"The pass key is {sample.answers[0]}.") == 1
        assert abs(sample.meta["depth_actual"] - sample.meta["depth"]) < 0.1


QA_ITEMS = tuple(
    QAItem(f"What is item {i}'s colour?", (f"colour{i}",), (Passage(f"Item {i}", f"Item {i} is colour{i}."),),
           (Passage(f"Other {i}", f"Other {i} is big."),))
    for i in range(40)
)


def test_qa_prompts_keep_gold_and_fit(tiny_runs):
    _, pipes = tiny_runs
    task = SquadTask((500, 900), samples=3, chat_template=False, items=QA_ITEMS)
    samples = task.samples(pipes[0])
    assert len(samples) == 6
    for s in samples:
        assert byte_count(s.prompt) <= s.meta["length"]
        assert f"is {s.answers[0]}." in s.prompt and s.prompt.endswith("Answer:")
    assert samples[0].answers == samples[1].answers  # the same question at every length
    assert "Passage 1: A\nx" in qa_prompt([Passage("A", "x")], "q?", chat_template=True)


def test_answer_extraction():
    qa, needle = SquadTask(), NeedleTask()
    assert qa.answer("\n\n  Paris, France\nQuestion: next") == "Paris, France"  # first non-empty line
    assert qa.score("\nParis\n", Sample("k", "p", ("Paris",))) == {"f1": 1.0, "em": 1.0}
    assert needle.answer(" 7067970. The special magic") == "7067970."  # run-on text is not the answer
    assert needle.answer(": 1, 2, 3") == ": 1, 2, 3"
    same = needle.compare({"prediction": " 7067970. What is"}, {"prediction": ": 7067970. The"})
    assert same == {"same_answer": 1.0, "agreement_f1": 1.0}


def test_evidence_dropped_after():
    kept = [torch.arange(10)] * 3 + [torch.tensor([0, 1, 2, 8, 9])] * 2 + [torch.tensor([0, 9])]
    assert dropped_after(kept, [1, 2]) == 4  # gone from layer 5 on: pruned after layer 4
    assert dropped_after(kept, [5]) == 2
    assert dropped_after(kept, [0, 9]) is None
    assert evidence_drops(ByteTokenizer(), "abc", ["b"], kept) is None  # no offsets: not tracked


# --- runner: same samples, resumable, reports ---------------------------------------------------


def test_resume_skips_finished_samples(tiny_runs, tmp_path, monkeypatch):
    configs, pipes = tiny_runs
    task = NeedleTask("single", "number", (600,), (0.0, 1.0), samples=1, sentences=SENTENCES)
    task.max_new_tokens = 4
    first = run_task(task, configs, pipes, tmp_path, progress=False)
    assert len(first) == 4 and {r["config"] for r in first} == {"origin", "pruned"}
    path = tmp_path / f"{task.name}.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # lose the last record mid-write

    calls = []
    original = NeedleTask.evaluate
    monkeypatch.setattr(NeedleTask, "evaluate", lambda self, pipe, s: calls.append(s.key) or original(self, pipe, s))
    second = run_task(task, configs, pipes, tmp_path, progress=False)
    assert calls == ["L600-d1.00-i0"]  # only the lost pair ran again
    assert len(second) == 4 and len(read_records(path)) == 4
    run_task(task, configs, pipes, tmp_path, progress=False)
    assert len(calls) == 1
    assert all(r["same_answer"] in (0.0, 1.0) for r in second)
    assert all(r["same_answer"] == 1.0 for r in second if r["config"] == "origin")


def test_report_only_evaluates_nothing(tiny_runs, tmp_path, monkeypatch):
    configs, pipes = tiny_runs
    run_task(PasskeyTask((400,), (0.5,)), configs, pipes, tmp_path, progress=False)
    monkeypatch.setattr(PasskeyTask, "evaluate", lambda *a: pytest.fail("evaluated in a report-only run"))
    wider = PasskeyTask((400,), (0.0, 0.5))  # a grid the runs only partly covered: what is there is reported
    records = run_task(wider, configs, pipes, tmp_path, progress=False, evaluate=False)
    assert sorted((r["config"], r["depth"]) for r in records) == [("origin", 0.5), ("pruned", 0.5)]
    assert all("same_answer" in r for r in records)
    assert len(read_records(tmp_path / "passkey.jsonl")) == 2


def test_recorded_digests_survive_new_config_fields() -> None:
    """The digests that committed result files carry still name these configs: eval/results/passkey.jsonl
    (2026-11-23, before attention/prompt_filter/decode), eval/results/sparse/ (before decode.autotune) and
    those made before the prefill section (2026-12-07). A field added to the config since must be in
    ADDED_FIELDS, or every recorded sample would look stale and be run again; a config away from a field's
    "as before" value matches only the newer records."""
    origin = config_digests(load_config("origin"))
    assert origin[1:] == ("e20f45f035", "881f84ad85", "2a68212d92")
    assert config_digests(load_config("smollm2-135m"))[1:] == ("32629a53a4", "da1916e810", "826d19afd5")
    tuned = config_digests(load_config("origin", ["decode.autotune=true"]))
    assert len(tuned) == 2 and tuned[0] != origin[0]  # it existed before the prefill section only
    assert len(config_digests(load_config("origin", ["prefill.compile=true"]))) == 1
    sparse = config_digests(load_config("eval/configs/smollm2-135m-flexprefill-g95.yaml"))
    assert sparse[2] == "0da6c94125" and len(sparse) == 3  # its attention section did not exist in the oldest


def test_records_of_an_older_schema_are_reused(tiny_runs, tmp_path):
    """A record written under an older digest of the same config counts as done and is reported."""
    configs, pipes = tiny_runs
    task = PasskeyTask((400,), (0.5,))
    first = run_task(task, configs[:1], pipes[:1], tmp_path, progress=False)
    path = tmp_path / "passkey.jsonl"
    old = configs[0].digests[-1]
    assert old != configs[0].digest
    path.write_text(path.read_text().replace(configs[0].digest, old))
    again = run_task(task, configs[:1], pipes[:1], tmp_path, progress=False)
    assert len(read_records(path)) == len(first) and [r["config_digest"] for r in again] == [old] * len(first)


def test_changed_config_or_task_settings_are_rerun(tiny_runs, tmp_path):
    configs, pipes = tiny_runs
    task = PasskeyTask((400,), (0.5,))
    run_task(task, configs[:1], pipes[:1], tmp_path, progress=False)
    edited = EvalConfig("origin", load_config({"generation": {"max_new_tokens": 7}}))
    records = run_task(task, [edited], build_pipelines([edited], pipes[0].model, pipes[0].tokenizer), tmp_path,
                       progress=False)
    assert len(records) == 1 and records[0]["config_digest"] == edited.digest
    assert len(read_records(tmp_path / "passkey.jsonl")) == 2
    task.max_new_tokens = 3  # a task setting that changes records but not prompts
    run_task(task, configs[:1], pipes[:1], tmp_path, progress=False)
    assert len(read_records(tmp_path / "passkey.jsonl")) == 3


def test_resolve_configs_requires_one_model(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("model: {dtype: bfloat16}\n")
    with pytest.raises(ConfigError, match="share the model"):
        resolve_configs(["origin", str(other)])
    with pytest.raises(ConfigError, match="twice"):
        resolve_configs(["origin", "origin"])
    assert [c.name for c in resolve_configs(["origin", "smollm2-135m"])] == ["origin", "smollm2-135m"]


def test_teacher_forcing_matches_full_forward(tiny_runs):
    """Unpruned, decode-step teacher forcing gives the NLL of one full forward pass."""
    _, pipes = tiny_runs
    pipe = pipes[0]
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(0))
    context, cont = ids[:, :30], ids[0, 30:].tolist()
    pre = pipe.prefill(context, reserve_tokens=len(cont))
    nll, _ = teacher_forced(pipe, pre.logits, pre.cache, 30, cont)
    with torch.no_grad():
        log_probs = torch.log_softmax(pipe.model(ids).logits[0, 29:-1].float(), dim=-1)
    expected = -log_probs[torch.arange(10), torch.tensor(cont)].sum().item()
    assert nll == pytest.approx(expected, rel=1e-4)


def test_every_task_end_to_end(tiny_runs, tmp_path):
    configs, pipes = tiny_runs
    data = tmp_path / "passage_retrieval_en.jsonl"
    data.write_text("".join(json.dumps({"input": "Which paragraph?", "context": "Paragraph 1: x. " * 40,
                                        "answers": ["Paragraph 1"], "length": 200, "dataset": "passage_retrieval_en",
                                        "all_classes": None, "_id": f"id{i}"}) + "\n" for i in range(2)))
    tasks = [
        *(NeedleTask(v, "number", (900,), (0.0, 1.0), sentences=SENTENCES) for v in VARIANTS),
        PasskeyTask((500,), (0.5,)),
        LMAgreementTask((300,), samples=2, continuation=8, text=" ".join(SENTENCES)),
        SquadTask((500,), samples=2, items=QA_ITEMS),
        LongBenchTask(data, samples=2, max_length=300),
    ]
    out = tmp_path / "out"
    for task in tasks:
        task.max_new_tokens = 4  # random weights never stop early; a few tokens exercise decoding
        records = run_task(task, configs, pipes, out, progress=False)
        assert records and {r["config"] for r in records} == {"origin", "pruned"}
        paths = write_report(task, records, configs, out, command="sliminfer eval ...")
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
        text = paths[0].read_text()
        assert "| all |" in text and "`pruned`" in text
    lm = [r for r in read_records(out / "lm_agreement.jsonl") if r["config"] == "pruned"]
    assert all(math.isfinite(r["nll_sum"]) and len(r["greedy_ids"]) == 8 and r["kept_tokens"] < 300 for r in lm)
    assert (out / "needle_single_pruned_heatmap.png").is_file() and (out / "lm_agreement.png").is_file()


def test_cli_builds_tasks():
    from sliminfer.cli.eval_cmd import command_line, make_task
    from sliminfer.cli.main import build_parser

    args = build_parser().parse_args(["eval", "needle", "--configs", "origin", "smollm2-135m", "--lengths", "1024",
                                      "--variant", "multiquery", "--values", "uuid"])
    task = make_task(args)
    assert task.name == "needle_multiquery_uuid" and task.lengths == (1024,) and not task.chat_template
    assert "--variant multiquery --values uuid" in command_line(args, task)
    assert "--report-only" not in command_line(args, task)
    args = build_parser().parse_args(["eval", "passkey", "--lengths", "1024", "--report-only"])
    assert command_line(args, make_task(args)).endswith("--no-chat --report-only")
    args = build_parser().parse_args(["eval", "longbench"])
    with pytest.raises(InputError, match="--data"):
        make_task(args)


# --- real weights -------------------------------------------------------------------------------


@pytest.mark.real_weights
def test_real_needle_prompt_fits_and_is_found(smollm2, tmp_path):
    model, tokenizer = smollm2
    configs = [EvalConfig("origin", load_config("origin")), EvalConfig("smollm2-135m", load_config("smollm2-135m"))]
    pipes = build_pipelines(configs, model, tokenizer)
    task = NeedleTask("single", "number", (1024,), (0.5,))
    sample = task.samples(pipes[0])[0]
    n = pipes[0].encode(sample.prompt, chat_template=False).shape[1]
    assert 1024 - 64 <= n <= 1024
    assert abs(sample.meta["depth_actual"] - 0.5) < 0.05
    records = run_task(task, configs, pipes, tmp_path, progress=False)
    assert [r["score"] for r in records] == [1.0, 1.0]  # both find it; the preset prunes at layer 26 here
    assert records[1]["kept_tokens"] < records[0]["kept_tokens"]
    assert [r["evidence_dropped_after"] for r in records] == [[None], [None]]  # the needle survived


@pytest.mark.real_weights
def test_real_lm_agreement(smollm2, tmp_path):
    model, tokenizer = smollm2
    pipe = SlimPipeline(model, tokenizer, load_config("origin"))
    task = LMAgreementTask((256,), samples=1, continuation=16)
    records = run_task(task, [EvalConfig("origin", pipe.config)], [pipe], tmp_path, progress=False)
    assert 2 < math.exp(records[0]["nll_sum"] / 16) < 200  # essay text: ppl ~22 at 1k tokens
    assert records[0]["greedy_agreement"] == 1.0
