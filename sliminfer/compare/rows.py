"""The rows of a comparison: the user's configs, each put on the model of one side.

Why a row's own model section is replaced: the speed side times every config on ONE model (a shape
with random weights) and the accuracy side scores every config on ONE other model (the real default
model), so that rows differ only in their strategies. A config that does not fit a side's model (a
schedule naming layer 31 on a 30-layer model) is reported as not applicable on that side, with the
reason, instead of ending the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sliminfer.core.config import ModelSection, SlimConfig
from sliminfer.core.errors import SlimInferError
from sliminfer.core.pipeline import SlimPipeline
from sliminfer.eval.runner import EvalConfig, named_configs

#: the field name bad row inputs are reported under
ROWS_FIELD = "CONFIG"


def load_rows(sources: Sequence[str], overrides: Sequence[str] = ()) -> list[EvalConfig]:
    """Preset names or YAML paths, each with ``overrides`` applied, named as ``sliminfer eval`` names them."""
    return named_configs(sources, ROWS_FIELD, overrides)


def on_model(row: EvalConfig, model: ModelSection) -> EvalConfig:
    """The row with its model section replaced by ``model`` (the side's shared model)."""
    return EvalConfig(row.name, row.config.model_copy(update={"model": model}))


def is_unpruned(config: SlimConfig) -> bool:
    """Whether a config runs the model as stock transformers does (no pruning, no attention strategy, the
    default cache): the baseline of the 'x unpruned' columns."""
    return config.pruning is None and config.attention is None and config.cache.name == SlimConfig().cache.name


def pipeline_or_reason(model: Any, tokenizer: Any, row: EvalConfig, side: str) -> SlimPipeline | str:
    """The row's pipeline around ``model``, or why the row does not apply to that model."""
    try:
        return SlimPipeline(model, tokenizer, row.config)
    except SlimInferError as exc:
        return f"does not apply to the {side} model: {exc}"
