"""Answer-scoring functions: SQuAD's, RULER's, and LongBench's exactly as LongBench computes them.

Why here and not from a package: LongBench's ``metrics.py`` pulls in ``rouge``, ``fuzzywuzzy`` and
``jieba`` for a few lines each, and its numbers depend on those packages' corner cases (the ``rouge``
package splits sentences on ".", counts distinct words and adds 1e-8 to a denominator; ``fuzz.ratio``
rounds to whole percent). These functions reproduce those numbers without the packages;
``tests/test_longbench_metrics.py`` pins them to values the packages produced. All return a float
in [0, 1].

What LongBench effectively runs: its requirements list ``rouge`` (1.0.1) and ``fuzzywuzzy`` (0.18.0)
but not ``python-Levenshtein``, so ``fuzz.ratio`` takes the pure-Python path (``difflib.SequenceMatcher``,
with its "Using slow pure-python SequenceMatcher" warning). :func:`fuzz_ratio` is that path. With
python-Levenshtein installed, fuzz.ratio uses ``2 * LCS / (len(a) + len(b))`` instead, which differs
where difflib's longest-block-first matching finds fewer matches than the LCS (or drops popular
characters of strings of 200+ characters as junk). LongBench's Chinese metrics (jieba segmentation)
are not reproduced.
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from sliminfer.core.errors import InputError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def qa_f1(prediction: str, reference: str) -> float:
    """LongBench ``qa_f1_score``: harmonic mean of token precision and recall on normalised words
    (counts clipped by ``Counter`` intersection). An empty side scores 0, two empty answers too."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    return _f1(sum((Counter(pred) & Counter(ref)).values()), len(pred), len(ref))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1: :func:`qa_f1`, except that two empty answers match (SQuAD's convention)."""
    if not normalize_answer(prediction) or not normalize_answer(reference):
        return float(normalize_answer(prediction) == normalize_answer(reference))
    return qa_f1(prediction, reference)


def _f1(overlap: int, n_prediction: int, n_reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_prediction, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def best_over(metric: Callable[[str, str], float], prediction: str, references: Sequence[str]) -> float:
    """The best score of ``prediction`` against any of several acceptable references (0 for none)."""
    return max((metric(prediction, ref) for ref in references), default=0.0)


# --- ROUGE-L as the ``rouge`` package computes it -------------------------------------------------


def _rouge_sentences(text: str) -> list[str]:
    """The package's sentences: pieces between "." that are not empty, whitespace collapsed afterwards
    (so a piece of spaces becomes an empty sentence, whose one word is "")."""
    return [" ".join(piece.split()) for piece in text.split(".") if piece]


def _lcs_words(reference: Sequence[str], hypothesis: Sequence[str]) -> set[str]:
    """The words of one longest common subsequence, reconstructed as the package does: from the end,
    a match goes diagonally, else up when the cell above is strictly larger, else left. Which LCS is
    taken matters, because the package counts the distinct words of the union of LCSs."""
    n, m = len(reference), len(hypothesis)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if reference[i - 1] == hypothesis[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    words: set[str] = set()
    i, j = n, m
    while i and j:
        if reference[i - 1] == hypothesis[j - 1]:
            words.add(reference[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def rouge_l(prediction: str, reference: str) -> float:
    """LongBench ``rouge_score``: ``Rouge().get_scores([prediction], [reference], avg=True)["rouge-l"]["f"]``
    of the ``rouge`` package (1.0.1), the summary-level union-LCS F.

    The package's rules, kept here: sentences are split on "." only; words on single spaces, case and
    punctuation kept; recall and precision divide the number of distinct words in the union of the
    sentence-pair LCSs by the number of distinct words of each side (its default ``exclusive=True``);
    F is ``2 * P * R / (P + R + 1e-8)``, so a perfect match scores 0.99999999... A side with no
    sentence (empty, or only dots) makes the package raise, which LongBench scores 0.

    One divergence: the package rebuilds each LCS recursively and so raises RecursionError (LongBench:
    0) for a sentence pair of more than about 1,000 words together; this function scores such pairs.
    """
    hypothesis, references = _rouge_sentences(prediction), _rouge_sentences(reference)
    if not hypothesis or not references:
        return 0.0
    hypothesis_words = [s.split(" ") for s in hypothesis]
    union: set[str] = set()
    for sentence in references:
        words = sentence.split(" ")
        for candidate in hypothesis_words:
            union |= _lcs_words(words, candidate)
    recall = len(union) / len({w for s in references for w in s.split(" ")})
    precision = len(union) / len({w for s in hypothesis_words for w in s})
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


# --- code, classification, retrieval, counting ------------------------------------------------------


def fuzz_ratio(a: str, b: str) -> float:
    """``fuzzywuzzy.fuzz.ratio(a, b) / 100`` in fuzzywuzzy's pure-Python mode, what LongBench runs:
    equal strings 1.0 (two empty ones too), one empty side 0.0, else difflib's ratio rounded to whole
    percent (Python's round: halves to even)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    return round(100 * difflib.SequenceMatcher(None, a, b).ratio()) / 100


def code_similarity(prediction: str, reference: str) -> float:
    """LongBench ``code_sim_score``: the first generated line (after leading newlines) with no backtick,
    ``#`` or ``//`` in it (none: the empty string), against the reference by :func:`fuzz_ratio`."""
    line = next(
        (ln for ln in prediction.lstrip("\n").split("\n") if "`" not in ln and "#" not in ln and "//" not in ln), ""
    )
    return fuzz_ratio(line, reference)


def classification_accuracy(prediction: str, reference: str, classes: Sequence[str]) -> float:
    """LongBench ``classification_score``: the class names found in the prediction share one point.

    A found name that is a strict substring of the reference ("location" inside "other location") is
    dropped, by LongBench's loop that removes items from the list it iterates over, which skips the
    item after each removal: so of two such names in a row only the first is dropped. That is kept.
    The score is ``1 / len(found)`` if the reference is among the names left, else 0.
    """
    found = [c for c in classes if c in prediction]
    i = 0
    while i < len(found):  # the for loop over a list being shortened, step by step
        if found[i] in reference and found[i] != reference:
            found.remove(found[i])
        i += 1
    return 1.0 / len(found) if reference in found else 0.0


def _share_of_numbers(prediction: str, wanted: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == wanted for n in numbers) / len(numbers) if numbers else 0.0


def retrieval_accuracy(prediction: str, reference: str) -> float:
    """LongBench ``retrieval_score``: the share of the numbers in the prediction that equal the first
    "Paragraph N" number of the reference. A reference without one is refused (LongBench crashes)."""
    match = re.search(r"Paragraph (\d+)", reference)
    if match is None:
        raise InputError(f"retrieval reference {reference!r} names no 'Paragraph N'")
    return _share_of_numbers(prediction, match.group(1))


def count_accuracy(prediction: str, reference: str) -> float:
    """LongBench ``count_score``: the share of the numbers in the prediction equal to the reference
    (compared as strings, unstripped, as LongBench does)."""
    return _share_of_numbers(prediction, str(reference))


def values_recalled(prediction: str, values: Sequence[str]) -> float:
    """RULER's ``string_match_all``: share of the expected values found verbatim (case-insensitive)."""
    low = prediction.lower()
    return sum(v.lower() in low for v in values) / len(values) if values else 0.0
