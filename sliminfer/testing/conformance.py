"""The conformance kit's entry points: which checks each kind of strategy must pass, and running them.

Each kind is one entry of :data:`KIND_CHECKS`: where its strategies sit in a config and the checks
(:mod:`sliminfer.testing.checks`) they must pass, so a new kind is one more line there.
:func:`conformance_checks` turns one registry entry into named :class:`Check` objects, one per check
and tiny model (pytest can parametrize over them); :func:`check_all` runs every registered entry's.

Checks need no pytest: a failure is an AssertionError that names the strategy, the check and the
numbers; a check that cannot run here (an adapter for a model type the tiny models do not include)
raises :class:`unittest.SkipTest`, which pytest reports as a skip.
"""

from __future__ import annotations

import unittest
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sliminfer.core.errors import SlimInferError
from sliminfer.core.registry import Registry, get_registry
from sliminfer.testing.checks import (
    filtered_decode_matches_stock_on_kept_ids,
    filtered_prefill_equals_stock_on_kept_ids,
    pruned_prefill_matches_reference,
    scores_have_documented_shape,
    state_resets_between_requests,
    static_decode_matches_eager,
    unpruned_decode_matches_stock,
    unpruned_prefill_equals_stock,
)
from sliminfer.testing.subject import Subject
from sliminfer.testing.tiny_models import ARCHS

CheckFn = Callable[[Subject], None]


@dataclass(frozen=True)
class KindChecks:
    """How the kit checks one kind: where its entries sit in a config (None: chosen by the model's
    type, as adapters are) and the checks each must pass."""

    section: tuple[str, ...] | None
    checks: tuple[CheckFn, ...]


#: kind -> what its strategies must pass
KIND_CHECKS: dict[str, KindChecks] = {
    "scorer": KindChecks(("pruning", "scorer"), (
        pruned_prefill_matches_reference, scores_have_documented_shape, state_resets_between_requests)),
    "schedule": KindChecks(("pruning", "schedule"), (pruned_prefill_matches_reference, state_resets_between_requests)),
    "cache": KindChecks(("cache",), (
        unpruned_decode_matches_stock, pruned_prefill_matches_reference, static_decode_matches_eager,
        state_resets_between_requests)),
    # an attention strategy on every layer the section's default covers; with its default options on the
    # kit's short prompts (a sparse one falls back to dense below its length threshold) it is exact
    "attention": KindChecks(("attention",), (
        unpruned_prefill_equals_stock, unpruned_decode_matches_stock, pruned_prefill_matches_reference,
        state_resets_between_requests)),
    # the second pass is stock transformers over the kept ids; the static decode continues at position m
    "prompt_filter": KindChecks(("prompt_filter",), (
        filtered_prefill_equals_stock_on_kept_ids, filtered_decode_matches_stock_on_kept_ids,
        static_decode_matches_eager, state_resets_between_requests)),
    "adapter": KindChecks(None, (
        unpruned_prefill_equals_stock, unpruned_decode_matches_stock, static_decode_matches_eager,
        pruned_prefill_matches_reference, state_resets_between_requests)),
}

#: the tiny models every kind but adapters is checked on (Qwen3: per-head q/k norms; an adapter is
#: checked on each of its own model types)
CHECKED_ARCHS = ("llama", "qwen3")

#: options for the built-ins whose Config has required fields or defaults sized for real models, chosen
#: for the tiny models (scorer block size 16, a 301-token prompt, six layers); ``options=`` replaces them.
#: snapkv scores single tokens (block size 1: prompts of 31 and 21 tokens), so its window shrinks to 4
TINY_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("schedule", "fixed"): {"layers": [1, 3], "budgets": [160, 64]},
    ("schedule", "ratio"): {"layers": [0, 2], "ratios": [0.5, 0.5], "block_size": 16},
    ("scorer", "snapkv"): {"block_size": 1, "window": 4, "kernel_size": 3},
    ("prompt_filter", "gemfilter"): {"layer": 2, "tokens": 200},
}


@dataclass(frozen=True)
class Check:
    """One conformance check of one strategy on one tiny model; call it to run it."""

    subject: Subject
    run: CheckFn
    skip: str | None = None  # why it cannot run here, if it cannot

    @property
    def name(self) -> str:
        return self.run.__name__

    @property
    def id(self) -> str:
        """``kind-name-check-arch``, e.g. ``scorer-token_unit-pruned_prefill_matches_reference-llama``."""
        return f"{self.subject.kind}-{self.subject.name}-{self.name}-{self.subject.arch}"

    def __str__(self) -> str:
        return self.id

    def __call__(self) -> None:
        """Run the check: AssertionError (naming strategy, check and numbers) if the strategy fails it,
        also when it raises anything else; :class:`unittest.SkipTest` if the check cannot run here."""
        if self.skip is not None:
            raise unittest.SkipTest(f"{self.subject}: {self.name}: {self.skip}")
        try:
            self.run(self.subject)
        except unittest.SkipTest:
            raise
        except Exception as exc:
            what = str(exc) if isinstance(exc, AssertionError) else f"raised {type(exc).__name__}: {exc}"
            raise AssertionError(f"{self.subject}: check {self.name} failed: {what}") from exc


def conformance_checks(kind: str, name: str, options: Mapping[str, Any] | None = None,
                       registry: Registry | None = None) -> list[Check]:
    """The checks the registered ``kind`` ``name`` (with ``options``, else :data:`TINY_OPTIONS` or its
    Config's defaults) must pass, on each tiny model it applies to; ``registry``: the process-wide one
    by default. Its config is validated here, so options that do not fit raise the ConfigError now."""
    if kind not in KIND_CHECKS:
        raise ValueError(f"the conformance kit has no checks for kind {kind!r}; it checks {', '.join(KIND_CHECKS)} "
                         "(a new kind is one entry of sliminfer.testing.conformance.KIND_CHECKS)")
    registry = registry if registry is not None else get_registry()
    registry.get(kind, name)
    table = KIND_CHECKS[kind]
    chosen = dict(TINY_OPTIONS.get((kind, name), {}) if options is None else options)
    if table.section is None and chosen:
        raise ValueError(f"{kind} {name!r} takes no options (got {chosen})")
    checks = []
    for arch in CHECKED_ARCHS if table.section is not None else (name,):
        subject = Subject(kind, name, chosen, registry, arch, table.section)
        skip = None if arch in ARCHS else (f"the tiny models include no {arch!r} model (sliminfer.testing.tiny_models "
                                           f"builds {', '.join(ARCHS)})")
        if skip is None:
            subject.config()
        checks += [Check(subject, run, skip) for run in table.checks]
    return checks


def check_all(registry: Registry | None = None,
              options: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> dict[str, str]:
    """Run the checks of every registered entry of every kind (``options`` by ``(kind, name)``); return
    each check's outcome by id (``passed``, ``skipped: ...``). Raise one AssertionError listing every
    failure, an entry that cannot be set up on a tiny model included, once all have run."""
    registry = registry if registry is not None else get_registry()
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    for kind, entries in registry.entries.items():
        for name in sorted(entries):
            try:
                checks = conformance_checks(kind, name, (options or {}).get((kind, name)), registry)
            except SlimInferError as exc:
                outcomes[f"{kind}-{name}"] = "failed"
                failures.append(f"{kind} {name!r} cannot be set up on a tiny model: {exc}")
                continue
            for check in checks:
                try:
                    check()
                    outcomes[check.id] = "passed"
                except unittest.SkipTest as skip:
                    outcomes[check.id] = f"skipped: {skip}"
                except AssertionError as exc:
                    outcomes[check.id] = "failed"
                    failures.append(str(exc))
    if failures:
        raise AssertionError(f"{len(failures)} of {len(outcomes)} conformance checks failed:\n" + "\n".join(failures))
    return outcomes
