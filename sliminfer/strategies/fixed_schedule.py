"""The paper's fixed schedule: absolute token budgets after given 0-indexed layers."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from sliminfer.core.config import ConfigModel
from sliminfer.core.errors import ConfigError
from sliminfer.strategies.base import Schedule, check_layers


class FixedScheduleConfig(ConfigModel):
    layers: list[int] = Field(min_length=1, description="0-indexed layers after which to prune, increasing.")
    budgets: list[int] = Field(min_length=1, description="Prompt tokens kept after each layer, non-increasing.")

    @field_validator("layers")
    @classmethod
    def _increasing_layers(cls, layers: list[int]) -> list[int]:
        return check_layers(layers)

    @field_validator("budgets")
    @classmethod
    def _non_increasing_budgets(cls, budgets: list[int]) -> list[int]:
        if any(b <= 0 for b in budgets):
            raise ValueError(f"budgets must be positive; got {budgets}")
        if any(b > a for a, b in zip(budgets, budgets[1:])):
            raise ValueError(f"budgets must not increase from one pruning layer to the next; got {budgets}")
        return budgets

    @model_validator(mode="after")
    def _same_length(self) -> FixedScheduleConfig:
        if len(self.layers) != len(self.budgets):
            raise ValueError(f"layers ({len(self.layers)}) and budgets ({len(self.budgets)}) differ in length")
        return self


class FixedBudgetSchedule(Schedule):
    """Keep ``budgets[i]`` prompt tokens after layer ``layers[i]`` (the paper's 'fixed' schedule)."""

    Config = FixedScheduleConfig
    config: FixedScheduleConfig

    def budget(self, layer: int, tokens: int) -> int | None:
        try:
            return self.config.budgets[self.config.layers.index(layer)]
        except ValueError:
            return None

    def check_block_size(self, block_size: int, field: str) -> None:
        for budget in self.config.budgets:
            if budget % block_size:
                raise ConfigError(
                    f"{field}.budgets", budget, f"each budget must be a positive multiple of the block size {block_size}"
                )

    @property
    def smallest_budget(self) -> int:
        return min(self.config.budgets)

