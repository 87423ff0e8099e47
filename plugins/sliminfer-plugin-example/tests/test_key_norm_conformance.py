"""The ``key_norm`` scorer passes sliminfer's conformance kit (``sliminfer.testing``): on tiny Llama and
Qwen3 models its pruned prefill keeps the positions and gives the logits of the masked full-length
reference, its scores have the documented shape and are finite, and it keeps no state between requests.

The kit finds ``key_norm`` in the registry, so the package must be installed (``pip install -e .``).
"""

from __future__ import annotations

import pytest

from sliminfer.testing import Check, conformance_checks


@pytest.mark.parametrize("check", conformance_checks("scorer", "key_norm", {"query_weight": 0.5}), ids=str)
def test_key_norm_conforms(check: Check) -> None:
    check()
