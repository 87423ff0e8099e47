"""Answer-scoring functions, written from their public definitions.

Why here and not from a package: the usual implementations (SQuAD's script, ``rouge``,
``thefuzz``/``rapidfuzz``, LongBench's ``metrics.py``) are small, pull in dependencies, and differ in
corner cases that matter when two configs are compared point by point; one local, tested copy keeps
every task scoring the same way. All functions return a float in [0, 1].
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall on normalised words (SQuAD / LongBench ``qa_f1``).

    Two empty answers count as a match (SQuAD's convention); one empty side scores 0.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    return _f1(sum((Counter(pred) & Counter(ref)).values()), len(pred), len(ref))


def _f1(overlap: int, n_prediction: int, n_reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_prediction, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def best_over(metric: Callable[[str, str], float], prediction: str, references: Sequence[str]) -> float:
    """The best score of ``prediction`` against any of several acceptable references."""
    return max((metric(prediction, ref) for ref in references), default=0.0)


def _lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: LCS of lower-cased alphanumeric word tokens, precision/recall against each side.

    This is the sentence-level form; the ``rouge`` package LongBench calls uses a summary-level
    union-LCS that can differ slightly on multi-sentence outputs.
    """
    pred = re.sub(r"[^a-z0-9]+", " ", prediction.lower()).split()
    ref = re.sub(r"[^a-z0-9]+", " ", reference.lower()).split()
    if not pred or not ref:
        return 0.0
    return _f1(_lcs_length(pred, ref), len(pred), len(ref))


def edit_similarity(a: str, b: str) -> float:
    """Normalised InDel similarity ``2 * LCS / (len(a) + len(b))`` on characters.

    This is what ``fuzz.ratio / 100`` computes in thefuzz/rapidfuzz (unrounded); two empty strings
    are identical.
    """
    if not a and not b:
        return 1.0
    return 2 * _lcs_length(a, b) / (len(a) + len(b))


def code_similarity(prediction: str, reference: str) -> float:
    """LongBench ``code_sim``: the first generated line that is not a comment or a code fence,
    compared with the reference line by :func:`edit_similarity`."""
    line = next(
        (ln for ln in prediction.lstrip("\n").split("\n") if "`" not in ln and "#" not in ln and "//" not in ln), ""
    )
    return edit_similarity(line, reference)


def classification_accuracy(prediction: str, reference: str, classes: Sequence[str]) -> float:
    """LongBench ``classification``: the class names found in the prediction share one point.

    A found name that is a strict substring of the reference (e.g. "Location" inside "Other
    location") is not held against it; the score is ``1 / matches`` if the reference was found.
    """
    found = [c for c in classes if c in prediction]
    found = [c for c in found if c == reference or c not in reference]
    return 1.0 / len(found) if reference in found else 0.0


def _share_of_numbers(prediction: str, wanted: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == wanted for n in numbers) / len(numbers) if numbers else 0.0


def retrieval_accuracy(prediction: str, reference: str) -> float:
    """LongBench ``retrieval``: share of the numbers in the prediction that are the reference's
    paragraph number (from "Paragraph N" in the reference)."""
    match = re.search(r"Paragraph (\d+)", reference)
    return _share_of_numbers(prediction, match.group(1)) if match else 0.0


def count_accuracy(prediction: str, reference: str) -> float:
    """LongBench ``count``: share of the numbers in the prediction equal to the reference count."""
    return _share_of_numbers(prediction, str(reference).strip())


def values_recalled(prediction: str, values: Sequence[str]) -> float:
    """RULER's ``string_match_all``: share of the expected values found verbatim (case-insensitive)."""
    low = prediction.lower()
    return sum(v.lower() in low for v in values) / len(values) if values else 0.0
