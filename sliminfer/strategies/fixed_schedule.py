"""The paper's fixed schedule: absolute token budgets after given 0-indexed layers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sliminfer.core.errors import ConfigError
from sliminfer.strategies.base import Schedule


class FixedScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layers: list[int] = Field(min_length=1, description="0-indexed layers after which to prune, increasing.")
    budgets: list[int] = Field(min_length=1, description="Prompt tokens kept after each layer, non-increasing.")

    @model_validator(mode="after")
    def _shape(self) -> FixedScheduleConfig:
        if len(self.layers) != len(self.budgets):
            raise ValueError(f"layers ({len(self.layers)}) and budgets ({len(self.budgets)}) differ in length")
        for a, b in zip(self.layers, self.layers[1:]):
            if b <= a:
                raise ValueError(f"layers must be strictly increasing with no repeats; got {self.layers}")
        for a, b in zip(self.budgets, self.budgets[1:]):
            if b > a:
                raise ValueError(f"budgets must not increase from one pruning layer to the next; got {self.budgets}")
        if any(b <= 0 for b in self.budgets):
            raise ValueError(f"budgets must be positive; got {self.budgets}")
        if any(layer < 0 for layer in self.layers):
            raise ValueError(f"layers must be >= 0; got {self.layers}")
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
        if self.config.budgets[-1] < 2 * block_size:
            raise ConfigError(
                f"{field}.budgets", self.config.budgets[-1],
                f"must be at least 2 blocks ({2 * block_size} tokens): the sink and the last block are always kept",
            )

    def check_model(self, num_layers: int, field: str) -> None:
        for layer in self.config.layers:
            if layer >= num_layers:
                raise ConfigError(f"{field}.layers", layer, f"must be a layer index in 0..{num_layers - 1}")
