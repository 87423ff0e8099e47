"""The strategy a conformance check is about, and everything the kit picks around it on a tiny model.

A strategy never runs alone: a scorer needs a schedule, a cache manager needs a model and, to be
checked pruned, a scorer and a schedule. The kit fills every other place of the config with a partner
of its own that fits tiny models (:data:`PARTNER_SCORER`, a fixed schedule scaled to the block size,
the default ``gpu`` cache manager), all looked up by name in the registry under test, so the kit imports
no concrete strategy. Prompts and budgets scale with the scorer's block size, so every pruning layer
has blocks to choose from whatever block size a scorer's options set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sliminfer.core.config import SlimConfig, StrategySpec
from sliminfer.core.pipeline import SlimPipeline, load_config
from sliminfer.core.registry import Registry
from sliminfer.strategies.block_selection import fewest_kept_tokens
from sliminfer.testing.tiny_models import COMMON, random_prompt, tiny_model

#: the scorer the kit runs a non-scorer with; a scorer under test gets this block size unless its
#: options set one (its Config's default, 64, would need prompts four times as long)
PARTNER_SCORER: dict[str, Any] = {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4}
#: layers after which the kit's own fixed schedule prunes (the tiny models have six)
PARTNER_LAYERS = [1, 3]
#: seeds of the tiny model and of the two prompts
MODEL_SEED, PROMPT_SEEDS = 0, (11, 12)
#: prompt room the tiny model must leave for generated tokens
DECODE_ROOM = 64


@dataclass(frozen=True)
class Subject:
    """One registry entry (``kind``, ``name``, ``options``) set up in a config on a tiny ``arch`` model.

    ``section`` is where the entry sits in a config (``("pruning", "scorer")``); None for a model
    adapter, which the registry picks by the model's type instead (then ``arch`` is that type).
    """

    kind: str
    name: str
    options: Mapping[str, Any]
    registry: Registry
    arch: str
    section: tuple[str, ...] | None

    def __str__(self) -> str:
        options = f" with options {dict(self.options)}" if self.options else ""
        return f"{self.kind} {self.name!r}{options} on a tiny {self.arch}"

    def _own_spec(self) -> dict[str, Any]:
        """The subject's config section; a scorer gets the kit's block size unless its options set one."""
        defaults = {"block_size": PARTNER_SCORER["block_size"]} if self.kind == "scorer" else {}
        return {**defaults, **self.options, "name": self.name}

    def _scorer_options(self) -> Any:
        """The options (a ScorerConfig) of the scorer in the config: the one under test, or the kit's."""
        spec = StrategySpec.model_validate(self._own_spec() if self.kind == "scorer" else PARTNER_SCORER)
        return self.registry.options("scorer", spec, "pruning.scorer")

    @property
    def block_size(self) -> int:
        """The block size of the scorer in the config (the one under test, or the kit's)."""
        return int(self._scorer_options().block_size)

    def config(self, pruned: bool = True) -> SlimConfig:
        """The checked config: the subject in its section, the kit's partners everywhere else (its fixed
        schedule keeps 10 blocks after layer 1 and 4 after layer 3, or what the sink and the scorer's window
        blocks always keep where that is more)."""
        size = self.block_size
        small = max(4 * size, fewest_kept_tokens(size, int(self._scorer_options().window)))  # whole blocks
        raw: dict[str, Any] = {"pruning": {
            "scorer": PARTNER_SCORER,
            "schedule": {"name": "fixed", "layers": PARTNER_LAYERS, "budgets": [max(10 * size, small), small]},
        }}
        if self.section is not None:
            *parents, leaf = self.section
            place = raw
            for key in parents:
                place = place.setdefault(key, {})
            place[leaf] = self._own_spec()
        if not pruned:
            raw["pruning"] = None
        return load_config(raw, registry=self.registry)

    def build(self, kind: str) -> Any:
        """A fresh instance of the config's scorer or schedule (``kind``), for the reference to use."""
        spec = getattr(self.config().pruning, kind)
        return self.registry.build(kind, spec, f"pruning.{kind}")

    def prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two prompts of different lengths and tokens: 18 full blocks and 13 tokens, 16 blocks and 5."""
        size = self.block_size
        return random_prompt(18 * size + 13, PROMPT_SEEDS[0]), random_prompt(16 * size + 5, PROMPT_SEEDS[1])

    def model(self) -> torch.nn.Module:
        """A fresh tiny fp32 model of ``arch``, with room for the longer prompt and the generated tokens."""
        room = max(COMMON["max_position_embeddings"], self.prompts()[0].shape[1] + DECODE_ROOM)
        return tiny_model(self.arch, seed=MODEL_SEED, max_position_embeddings=room)

    def pipeline(self, model: torch.nn.Module, pruned: bool = True) -> SlimPipeline:
        """``model`` in a pipeline with the subject's config (unpruned: the same without ``pruning``)."""
        return SlimPipeline(model, config=self.config(pruned), registry=self.registry)
