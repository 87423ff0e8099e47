"""Keep a fraction of the current tokens after given layers (budgets that follow the prompt length)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from sliminfer.core.config import ConfigModel
from sliminfer.core.errors import ConfigError
from sliminfer.strategies.base import Schedule, check_layers


class RatioScheduleConfig(ConfigModel):
    layers: list[int] = Field(min_length=1, description="0-indexed layers after which to prune, increasing.")
    ratios: list[float] = Field(min_length=1, description="Fraction of the CURRENT tokens kept after each layer.")
    block_size: int = Field(64, ge=1, description="Budgets round down to multiples of this (set to the scorer's).")

    @field_validator("layers")
    @classmethod
    def _increasing_layers(cls, layers: list[int]) -> list[int]:
        return check_layers(layers)

    @field_validator("ratios")
    @classmethod
    def _fractions(cls, ratios: list[float]) -> list[float]:
        if any(not 0.0 < r <= 1.0 for r in ratios):
            raise ValueError(f"ratios must lie in (0, 1]; got {ratios}")
        return ratios

    @model_validator(mode="after")
    def _same_length(self) -> RatioScheduleConfig:
        if len(self.layers) != len(self.ratios):
            raise ValueError(f"layers ({len(self.layers)}) and ratios ({len(self.ratios)}) differ in length")
        return self


class RatioSchedule(Schedule):
    """Keep ``ratios[i]`` of the tokens present after layer ``layers[i]``, rounded down to whole blocks."""

    Config = RatioScheduleConfig
    config: RatioScheduleConfig

    def budget(self, layer: int, tokens: int) -> int | None:
        try:
            ratio = self.config.ratios[self.config.layers.index(layer)]
        except ValueError:
            return None
        size = self.config.block_size
        return max(2 * size, int(tokens * ratio) // size * size)

    def check_block_size(self, block_size: int, field: str) -> None:
        if block_size != self.config.block_size:
            raise ConfigError(f"{field}.block_size", self.config.block_size, f"must equal the scorer's block_size {block_size}")
