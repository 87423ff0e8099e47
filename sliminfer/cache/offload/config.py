"""Options of the ``offload`` cache manager, validated like every config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from sliminfer.core.config import ConfigModel


class OffloadConfig(ConfigModel):
    """Options of the ``offload`` cache manager (``cache: {name: offload, decode_budget: 2048}``)."""

    block_size: int = Field(64, ge=1, description="Tokens per block, the unit of activation and transfer.")
    unit_size: int = Field(8, ge=1, description="Tokens per token unit of the block score; must divide block_size.")
    sink_blocks: int = Field(1, ge=0, description="Leading prompt blocks always active (attention sink).")
    decode_budget: int | None = Field(
        None,
        description="Prompt tokens each layer keeps active (on the GPU) at decode, tail included; a multiple "
        "of block_size. null: every resident block is active.",
    )
    recent_window: int = Field(4, ge=1, description="Most recent decode tokens whose mean query is the local query.")
    selection: Literal["token_unit", "attention_unit"] = Field(
        "token_unit",
        description="Block score of the active-set choice: the paper's token_unit |q.k|, or attention_unit "
        "(softmax attention mass of the recent queries over the token units' mean keys).",
    )
    gamma: float = Field(0.9, ge=0.0, le=1.0, description="Swap only when the new selection overlaps the active "
                         "set by less than this fraction (1: follow every change, 0: never swap).")
    prefill_chunk: int | None = Field(
        8192, ge=1, description="Tokens per MLP chunk in the prefill, which bounds its activations (at 128k an "
        "8B model's MLP needs about 10 GiB at once); null: the whole sequence at once (faster, more memory).")
    pin_memory: bool = Field(True, description="Page-locked CPU buffers (needed for asynchronous copies on CUDA).")

    @field_validator("unit_size")
    @classmethod
    def _unit_divides_block(cls, value: int, info: ValidationInfo) -> int:
        block = info.data.get("block_size")
        if block is not None and block % value:
            raise ValueError(f"must divide block_size ({block})")
        return value

    @field_validator("decode_budget")
    @classmethod
    def _budget_in_blocks(cls, value: int | None, info: ValidationInfo) -> int | None:
        block, sink = info.data.get("block_size"), info.data.get("sink_blocks")
        if value is None or block is None:
            return value
        if value % block:
            raise ValueError(f"must be a multiple of block_size ({block}), e.g. {max(1, round(value / block)) * block}")
        if sink is not None and value < (sink + 1) * block:
            raise ValueError(
                f"must be at least (sink_blocks + 1) * block_size = {(sink + 1) * block}: the sink blocks and the "
                "most recent prompt block are always active"
            )
        return value
