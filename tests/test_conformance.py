"""The conformance kit (sliminfer.testing): every built-in of every kind passes it, and it fails broken
strategies, so it cannot pass vacuously.

The built-ins are collected from a registry of the built-ins alone, so a new built-in is checked here
as soon as it is registered, and installed plugins (whose own tests run the kit) change nothing.
"""

from __future__ import annotations

import unittest

import pytest
import torch

from sliminfer.core.registry import KINDS, Registry, hookimpl
from sliminfer.models.llama import LlamaAdapter
from sliminfer.strategies.base import Scorer
from sliminfer.testing import (
    CHECKED_ARCHS,
    KIND_CHECKS,
    Check,
    KindChecks,
    check_all,
    conformance_checks,
)
from sliminfer.testing.subject import Subject

BUILTINS = Registry(load_entry_points=False)


def _builtin_checks() -> list[Check]:
    return [check for kind, entries in BUILTINS.entries.items() for name in sorted(entries)
            for check in conformance_checks(kind, name, registry=BUILTINS)]


@pytest.mark.parametrize("check", _builtin_checks(), ids=str)
def test_builtin_conforms(check: Check) -> None:
    check()


def test_every_kind_has_checks() -> None:
    """A kind the registry knows but the kit does not would go unchecked."""
    assert set(KIND_CHECKS) == set(KINDS)
    assert {(c.subject.kind, c.subject.name) for c in _builtin_checks()} == {
        (kind, name) for kind, entries in BUILTINS.entries.items() for name in entries}


# the kit fails broken strategies -------------------------------------------------------------------
class RandomScorer(Scorer):
    """Fresh random scores on every call, whatever the queries and keys."""

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.rand(keys.shape[0], keys.shape[2] // self.block_size)


class ReversedDropLastScorer(Scorer):
    """Earlier blocks score higher, and the last full block gets no score at all."""

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        n_blocks = keys.shape[2] // self.block_size
        return torch.arange(n_blocks - 1, 0, -1, dtype=torch.float32).expand(keys.shape[0], -1)


class OlmoAdapter(LlamaAdapter):
    """An adapter for a model type the tiny models do not include."""

    model_types = ("olmo",)


class Plugin:
    def __init__(self, scorers: dict[str, type[Scorer]], adapters: tuple[type, ...] = ()) -> None:
        self.scorers, self.adapters = scorers, adapters

    @hookimpl
    def sliminfer_register(self, register) -> None:
        for name, cls in self.scorers.items():
            register.scorer(name, cls)
        for adapter in self.adapters:
            register.model_adapter(adapter)


def _registry(**scorers: type[Scorer]) -> Registry:
    registry = Registry(load_entry_points=False)
    registry.register_plugin(Plugin(scorers, (OlmoAdapter,)), name="broken")
    return registry


def test_scores_that_ignore_the_inputs_fail_every_scorer_check() -> None:
    registry = _registry(random=RandomScorer)
    checks = {c.name: c for c in conformance_checks("scorer", "random", registry=registry) if c.subject.arch == "llama"}
    assert set(checks) == {run.__name__ for run in KIND_CHECKS["scorer"].checks}
    failures = {
        # 301 tokens, 9 blocks of 16 and the 13-token tail kept after layer 1: the same count, other blocks
        "pruned_prefill_matches_reference": r"layer 2 holds 157 prompt positions, the reference 157; after layer 1 the "
                                            r"pipeline kept blocks \[\d.*\] and the reference \[\d.*\] \(reference scores",
        "scores_have_documented_shape": r"layer 1: each copy in a batch of 2 should score as batch 1 did; differs by",
        "state_resets_between_requests": r"the same prompt after another one",
    }
    for name, message in failures.items():
        with pytest.raises(AssertionError, match=rf"^scorer 'random' on a tiny llama: check {name} failed: {message}"):
            checks[name]()


def test_reversed_scores_without_the_last_block_fail_on_their_shape() -> None:
    registry = _registry(reversed=ReversedDropLastScorer)
    check = conformance_checks("scorer", "reversed", {"block_size": 32}, registry)[0]
    assert check.name == "pruned_prefill_matches_reference"
    with pytest.raises(AssertionError, match=r"^scorer 'reversed' with options \{'block_size': 32\} on a tiny llama: "
                                             r"check pruned_prefill_matches_reference failed: layer 1: score_blocks "
                                             r"returned shape \(1, 17\) for 18 full blocks of 32"):
        check()


def test_an_adapter_for_a_model_type_without_a_tiny_model_is_skipped() -> None:
    checks = conformance_checks("adapter", "olmo", registry=_registry())
    assert len(checks) == len(KIND_CHECKS["adapter"].checks) and all(c.skip for c in checks)
    with pytest.raises(unittest.SkipTest, match="the tiny models include no 'olmo' model"):
        checks[0]()


def test_options_that_do_not_fit_are_refused_before_any_check_runs() -> None:
    with pytest.raises(Exception, match="pruning.schedule.budgets"):
        conformance_checks("schedule", "fixed", {"layers": [1]}, BUILTINS)
    with pytest.raises(ValueError, match="no checks for kind 'prefill'"):
        conformance_checks("prefill", "dense", registry=BUILTINS)


def _stand_in_checks(registry: Registry) -> int:
    """Checks of one stand-in each: every entry on each checked tiny model, an adapter on its own type."""
    return sum(len(entries) * (1 if KIND_CHECKS[kind].section is None else len(CHECKED_ARCHS))
               for kind, entries in registry.entries.items())


def test_check_all_runs_every_entry_and_lists_every_failure(monkeypatch) -> None:
    """With the table's checks replaced by a fast stand-in: each entry on each of its tiny models; one
    strategy's failures and an entry that cannot be set up are reported together, after all ran."""
    seen: list[tuple[str, str, str]] = []

    def stand_in(subject: Subject) -> None:
        seen.append((subject.kind, subject.name, subject.arch))
        assert subject.name != "random", f"made up: block size {subject.block_size}"

    for kind, table in KIND_CHECKS.items():
        monkeypatch.setitem(KIND_CHECKS, kind, KindChecks(table.section, (stand_in,)))
    outcomes = check_all(_registry())
    assert outcomes.pop("adapter-olmo-stand_in-olmo").startswith("skipped: adapter 'olmo' on a tiny olmo")
    adapters = ("llama", "qwen2", "qwen3", "mistral", "phi3", "gemma")
    assert {k for k in outcomes if k.startswith("adapter-")} == {f"adapter-{a}-stand_in-{a}" for a in adapters}
    assert set(outcomes.values()) == {"passed"} and len(outcomes) == _stand_in_checks(_registry()) - 1

    registry = _registry(random=RandomScorer)
    seen.clear()
    with pytest.raises(AssertionError) as info:
        check_all(registry, options={("schedule", "ratio"): {"layers": [0]}})
    message = str(info.value)
    # ratio's checks are not built (one setup failure instead); random fails on each checked model
    outcomes_run = _stand_in_checks(registry) - len(CHECKED_ARCHS) + 1
    assert message.startswith(f"{1 + len(CHECKED_ARCHS)} of {outcomes_run} conformance checks failed:\n"), message
    assert "scorer 'random' on a tiny llama: check stand_in failed: made up: block size 16" in message
    assert "scorer 'random' on a tiny qwen3: check stand_in failed" in message
    assert "schedule 'ratio' cannot be set up on a tiny model: pruning.schedule" in message
    ran = {(kind, name) for kind, name, _ in seen}
    assert ran == {(kind, name) for kind, entries in registry.entries.items() for name in entries} - {
        ("schedule", "ratio"), ("adapter", "olmo")}
