"""Testing helpers for sliminfer and its plugins: tiny in-process models and a tokenizer for them, the
masked full-length reference, and the conformance kit every registered strategy must pass.

A plugin's test suite runs the kit over its own strategy::

    import pytest
    from sliminfer.testing import conformance_checks

    @pytest.mark.parametrize("check", conformance_checks("scorer", "my_scorer"), ids=str)
    def test_my_scorer_conforms(check):
        check()

Nothing here imports pytest; it is imported only by whoever tests (the library itself never imports it).
"""

from sliminfer.testing.conformance import (
    CHECKED_ARCHS,
    KIND_CHECKS,
    TINY_OPTIONS,
    Check,
    KindChecks,
    check_all,
    conformance_checks,
)
from sliminfer.testing.reference import (
    MaskedReference,
    ScoringReference,
    greedy_decode_both,
)
from sliminfer.testing.tiny_models import ARCHS, random_prompt, tiny_model
from sliminfer.testing.tiny_tokenizer import tiny_tokenizer

__all__ = [
    "ARCHS",
    "CHECKED_ARCHS",
    "KIND_CHECKS",
    "TINY_OPTIONS",
    "Check",
    "KindChecks",
    "MaskedReference",
    "ScoringReference",
    "check_all",
    "conformance_checks",
    "greedy_decode_both",
    "random_prompt",
    "tiny_model",
    "tiny_tokenizer",
]
