"""LongBench's metrics, re-implemented in sliminfer.eval.metrics, against numbers LongBench produced.

How the expected values were made (once, when this test was written): ``pip install --target DIR rouge
fuzzywuzzy jieba`` (rouge 1.0.1, fuzzywuzzy 0.18.0 without python-Levenshtein, as LongBench's
requirements give), then LongBench's own ``metrics.py`` (THUDM/LongBench, LongBench/metrics.py) was
called on each case and its return value pasted here with ``repr``. The same run compared 80,000
random cases (word salads with dots and spaces for ROUGE-L and QA F1, code-like strings for
code_sim, random class lists) and found no difference. The comparison against the packages runs
again below where they are installed.
"""

from __future__ import annotations

import pytest

from sliminfer.core.errors import InputError
from sliminfer.eval import metrics as m
from sliminfer.eval.longbench import score_longbench

ROUGE_L = [
    ("The cat sat on the mat.", "The cat sat on the mat.", 0.999999995),  # the package's + 1e-8
    ("the cat sat. the dog ran.", "the cat ran. a dog sat.", 0.9090909041322315),  # union of sentence LCSs
    ("Hello, World!", "hello world", 0.0),  # case and punctuation are kept
    ("the the the cat", "the cat", 0.999999995),  # distinct words are counted
    ("", "x", 0.0),  # the package raises on an empty hypothesis; LongBench scores 0
    ("...", "the report", 0.0),  # only dots: no sentence either
    ("A b. . c", "A b c", 0.8571428522448981),  # the piece " " is a sentence with the word ""
    ("The committee reviewed the budget. It approved new funding for schools, and rejected the tax plan.",
     "The budget was reviewed by the committee. New school funding was approved; the tax plan was rejected.",
     0.41379309845422124),
    ("a b c d", "d c b a", 0.24999999500000009),
]

QA_F1 = [
    ("", "", 0.0),  # LongBench: 0 (SQuAD's token_f1 says 1)
    ("The Eiffel Tower!", "eiffel tower", 1.0),
    ("paris paris", "Paris", 0.6666666666666666),  # clipped counts
    ("the cat sat on the mat", "cat on mat", 0.8571428571428571),
    ("a", "b", 0.0),  # both normalise to nothing
]

CODE_SIM = [
    ("```python\n# comment\nx = foo(1)\n", "x = foo(2)", 0.9),  # fences and comments skipped
    ("kitten", "sitting", 0.62),  # 61.5 % rounded to whole percent
    ("// only a comment", "y", 0.0),  # no line left: "" against "y"
    ("", "", 1.0),  # equal strings, before the empty-string rule
    ("abcdefgh", "aijklmno", 0.12),  # 12.5 % rounds half to even
    ("bcb", "cab", 0.33),  # difflib finds 1 match; the LCS (python-Levenshtein's ratio) has 2: 0.67
    ("\n\nreturn self.bcb", "return self.cab", 0.87),
    ("    for i in range(len(items)):", "    for item in items:", 0.72),
]

CLASSIFICATION = [
    # LongBench's loop removes "loc" and then skips "location", which stays: 1/2
    ("other location", "other location", ["loc", "location", "other location"], 0.5),
    ("person or other location", "other location", ["location", "other location", "person"], 0.5),
    ("other location", "other location", ["location", "other location", "person"], 1.0),
    ("nothing", "person", ["location", "person"], 0.0),
]

NUMBERS = [
    (m.retrieval_accuracy, "Paragraph 3 and 12", "Paragraph 12", 0.5),
    (m.retrieval_accuracy, "The answer is Paragraph 12", "Paragraph 12", 1.0),
    (m.count_accuracy, "There are 7 unique paragraphs: 7.", "7", 1.0),
    (m.count_accuracy, "5 or 7", "7", 0.5),
    (m.count_accuracy, "7", " 7", 0.0),  # compared unstripped, as LongBench does
]


@pytest.mark.parametrize(("prediction", "reference", "expected"), ROUGE_L)
def test_rouge_l_equals_the_rouge_package(prediction, reference, expected):
    assert m.rouge_l(prediction, reference) == expected


@pytest.mark.parametrize(("prediction", "reference", "expected"), QA_F1)
def test_qa_f1_equals_longbench(prediction, reference, expected):
    assert m.qa_f1(prediction, reference) == expected


@pytest.mark.parametrize(("prediction", "reference", "expected"), CODE_SIM)
def test_code_similarity_equals_fuzzywuzzy(prediction, reference, expected):
    assert m.code_similarity(prediction, reference) == expected


@pytest.mark.parametrize(("prediction", "reference", "classes", "expected"), CLASSIFICATION)
def test_classification_equals_longbench(prediction, reference, classes, expected):
    assert m.classification_accuracy(prediction, reference, classes) == expected


@pytest.mark.parametrize(("metric", "prediction", "reference", "expected"), NUMBERS)
def test_retrieval_and_count_equal_longbench(metric, prediction, reference, expected):
    assert metric(prediction, reference) == expected


def test_retrieval_reference_without_a_paragraph_is_refused():
    with pytest.raises(InputError, match="Paragraph N"):
        m.retrieval_accuracy("Paragraph 1", "the first one")


def test_longbench_scorer_uses_qa_f1_and_the_first_line():
    assert score_longbench("hotpotqa", "", [""]) == 0.0  # qa_f1, not SQuAD's token_f1
    assert m.token_f1("", "") == 1.0
    assert score_longbench("samsum", "\nThe cat sat.\nThe dog ran.", ["The cat sat."]) == 0.999999995


def test_against_the_packages_where_installed():
    """The same cases through the packages themselves (skipped where they are not installed)."""
    rouge = pytest.importorskip("rouge")
    fuzz = pytest.importorskip("fuzzywuzzy.fuzz")

    def package_rouge(prediction: str, reference: str) -> float:
        try:
            return rouge.Rouge().get_scores([prediction], [reference], avg=True)["rouge-l"]["f"]
        except Exception:  # noqa: BLE001 - LongBench's bare except
            return 0.0

    for prediction, reference, _ in ROUGE_L:
        assert m.rouge_l(prediction, reference) == package_rouge(prediction, reference)
    if fuzz.SequenceMatcher.__module__ == "difflib":  # python-Levenshtein absent, as in LongBench's setup
        for a, b in [("kitten", "sitting"), ("bcb", "cab"), ("abcdefgh", "aijklmno"), ("", "x"), ("", "")]:
            assert m.fuzz_ratio(a, b) == fuzz.ratio(a, b) / 100
