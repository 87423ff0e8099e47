"""``SlimPipeline``: the one way in.

It binds a model (through its adapter), the strategies a config names (resolved once here, so no
registry lookup happens per token) and a tokenizer, and offers ``prefill`` and ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import ValidationError

from sliminfer.core import events
from sliminfer.core.config import GenerationSection, SlimConfig, config_error_from_validation, read_config
from sliminfer.core.errors import ConfigError
from sliminfer.core.forward import StagedForward
from sliminfer.core.prompts import prompt_ids
from sliminfer.core.registry import Registry, get_registry
from sliminfer.core.results import GenerationResult, PrefillResult
from sliminfer.core.sampling import next_token
from sliminfer.core.timing import now

T = TypeVar("T")
ConfigSource = str | Path | Mapping[str, Any] | SlimConfig | None


class SlimPipeline:
    """A model with SlimInfer's staged forward pass, strategies and KV cache manager."""

    def __init__(self, model: Any, tokenizer: Any = None, config: SlimConfig | None = None,
                 registry: Registry | None = None) -> None:
        self.registry = registry or get_registry()
        self.config = config or SlimConfig()
        self.registry.check_config(self.config)
        check_model_object(model)
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = self.registry.adapter_for(model.config).cls(model)
        if self.adapter.layer_devices is not None and self.config.cache.name == "offload":
            raise ConfigError("cache.name", "offload", "the offload manager keeps its buffers and copy streams on "
                              "one device, and this model's layers are spread over several (device_map); use "
                              "cache.name 'gpu', or load the model onto one device")
        scorer = schedule = None
        pruning = self.config.pruning
        if pruning is not None:
            scorer = self.registry.build("scorer", pruning.scorer, "pruning.scorer")
            schedule = self.registry.build("schedule", pruning.schedule, "pruning.schedule")
            schedule.check_model(self.adapter.num_layers, "pruning.schedule")
        self.forward = StagedForward(
            self.adapter, self.registry, scorer, schedule, pruning.prune_point if pruning else "after_attention"
        )
        self._cache_entry = self.registry.get("cache", self.config.cache.name, "cache.name")
        self._cache_options = self.registry.options("cache", self.config.cache, "cache")
        self._observe_decode = self.registry.has_observers("sliminfer_decode_step")
        self._static_decoder: Any = None  # the fast decode's buffers and graph, kept for the next call

    # construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, source: ConfigSource = None, **overrides: Any) -> SlimPipeline:
        """Build from a preset name, YAML path, dict or config; ``overrides`` are dotted keys
        (``**{"model.dtype": "float32"}``) or ``section__field=value`` keywords."""
        return cls._load(load_config(source, overrides))

    @classmethod
    def from_pretrained(cls, model_or_path: Any, tokenizer: Any = None, config: ConfigSource = None) -> SlimPipeline:
        """Wrap an in-memory ``PreTrainedModel`` or load a local checkpoint directory."""
        cfg = load_config(config)
        if isinstance(model_or_path, (str, Path)):
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"source": str(model_or_path)})})
            return cls._load(cfg, tokenizer)
        return cls(model_or_path, tokenizer, cfg)

    @classmethod
    def _load(cls, config: SlimConfig, tokenizer: Any = None) -> SlimPipeline:
        """Load ``config.model``, checking the config against its config.json before the weights."""
        from sliminfer.core.loading import load_model

        registry = get_registry()
        model, loaded_tokenizer = load_model(
            config.model, lambda hf_config: check_config_fits_checkpoint(config, registry, hf_config)
        )
        return cls(model, tokenizer or loaded_tokenizer, config, registry)

    # helpers -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def new_cache(self, reserve_tokens: int = 0) -> Any:
        cache = self._cache_entry.cls(self._cache_options)
        cache.setup(self.adapter.num_layers, reserve_tokens)
        return cache

    def encode(self, prompt: str | Sequence[int] | torch.Tensor, chat_template: bool | None = None) -> torch.Tensor:
        """Token ids ``[1, n]`` on the model's device for a text prompt or ready ids (checked: one prompt,
        integer ids inside the vocabulary; see :mod:`sliminfer.core.prompts`)."""
        use_chat = self.config.generation.chat_template if chat_template is None else chat_template
        return prompt_ids(prompt, self.tokenizer, self.adapter.vocab_size, use_chat).to(self.device)

    def _eos_ids(self) -> set[int]:
        eos: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if value is not None:
                eos.update(value if isinstance(value, (list, tuple)) else [value])
        return eos

    # inference ----------------------------------------------------------------------------------
    def prefill(self, input_ids: torch.Tensor | Sequence[int] | str, reserve_tokens: int = 0) -> PrefillResult:
        """Run the prompt through the model (pruning as configured); logits of its last token."""
        ids = self.encode(input_ids)
        self.forward.check_prompt(ids, reserve_tokens + 1)
        return self._oom_guarded(lambda: self.forward.prefill(ids, self.new_cache(reserve_tokens)), "prefill", ids)

    def _oom_guarded(self, fn: Callable[[], T], phase: str, ids: torch.Tensor) -> T:
        """``fn()``; on CUDA an out-of-memory error becomes a GPUOutOfMemoryError that names the memory
        cap and suggests the offload cache manager, instead of a stack trace from deep inside a layer."""
        if self.device.type != "cuda":
            return fn()
        from sliminfer.cache.memory import call_with_oom_message

        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return call_with_oom_message(fn, self.device, phase=phase, prompt_tokens=int(ids.shape[-1]),
                                     cache_name=self.config.cache.name, pruning=self.config.pruning is not None,
                                     weights_bytes=weights)

    def generate(
        self,
        prompt_or_ids: str | Sequence[int] | torch.Tensor,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        chat_template: bool | None = None,
        fast: bool = False,
    ) -> GenerationResult:
        """Prefill, then decode until EOS, a stop string or ``max_new_tokens``.

        ``fast=True`` decodes with static buffers, replayed as a CUDA graph on GPUs (split-KV attention
        and torch.compile; see :mod:`sliminfer.core.graph_decode`): greedy only, no stop strings, and
        decode-step observers are not called. It runs all ``max_new_tokens`` steps on the device and
        cuts the text at EOS afterwards.
        """
        gen = generation_options(self.config.generation, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k, top_p=top_p, seed=seed, stop=stop, chat_template=chat_template)
        if not isinstance(fast, bool):
            raise ConfigError("generate.fast", fast, "must be True or False")
        if fast:
            check_fast_options(gen)
        ids = self.encode(prompt_or_ids, gen.chat_template)
        self.forward.check_prompt(ids, gen.max_new_tokens)
        if fast:
            return self._oom_guarded(lambda: self._generate_fast(ids, gen.max_new_tokens), "generate", ids)
        return self._oom_guarded(lambda: self._generate(ids, gen), "generate", ids)

    def _generate_fast(self, ids: torch.Tensor, max_new_tokens: int) -> GenerationResult:
        from sliminfer.core.graph_decode import fast_generate

        out = fast_generate(self, ids, max_new_tokens, decoder=self._static_decoder)
        # reused (graph included) while later prompts fit; the offload decoder holds one request's host KV
        self._static_decoder = out.decoder if self.config.cache.name != "offload" else None
        return GenerationResult(token_ids=out.token_ids, text=out.text, prompt_tokens=out.prompt_tokens,
                                ttft_s=out.ttft_s, decode_s_per_token=out.decode_s_per_token, total_s=out.total_s,
                                prefill=out.prefill, stopped_by=out.stopped_by)

    def _generate(self, ids: torch.Tensor, gen: GenerationSection) -> GenerationResult:
        generator = None
        if gen.temperature > 0:
            generator = torch.Generator(device=self.device)
            seed = gen.seed
            if seed is None:
                seed = torch.seed()
                if self.adapter.head_shards is not None:  # tensor-parallel ranks must sample the same tokens
                    seed = self.adapter.head_shards.broadcast_int(seed % (1 << 62), self.device)
            generator.manual_seed(seed)
        eos = self._eos_ids()
        device = self.device
        start = now(device)
        prefill = self.forward.prefill(ids, self.new_cache(gen.max_new_tokens))
        token = next_token(prefill.logits, gen.temperature, gen.top_k, gen.top_p, generator)
        ttft = now(device) - start
        tokens = [int(token)]
        stopped_by = "max_new_tokens"
        position = ids.shape[1]
        while True:
            if self._observe_decode:
                self.registry.pm.hook.sliminfer_decode_step(
                    event=events.DecodeStep(len(tokens) - 1, tokens[-1], position)
                )
            if tokens[-1] in eos:
                stopped_by = "eos"
                break
            if gen.stop and self._hit_stop(tokens, gen.stop):
                stopped_by = "stop"
                break
            if len(tokens) >= gen.max_new_tokens:
                break
            logits = self.forward.decode_step(token, position, prefill.cache)
            token = next_token(logits, gen.temperature, gen.top_k, gen.top_p, generator)
            tokens.append(int(token))
            position += 1
        total = now(device) - start
        decode_steps = len(tokens) - 1
        return GenerationResult(
            token_ids=tokens,
            text=self._text(tokens, gen.stop),
            prompt_tokens=ids.shape[1],
            ttft_s=ttft,
            decode_s_per_token=(total - ttft) / decode_steps if decode_steps else 0.0,
            total_s=total,
            prefill=prefill,
            stopped_by=stopped_by,
        )

    def _hit_stop(self, tokens: list[int], stop: Sequence[str]) -> bool:
        if self.tokenizer is None:
            return False
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
        return any(s in text for s in stop)

    def _text(self, tokens: list[int], stop: Sequence[str]) -> str:
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        lead = len(text) - len(text.lstrip())  # a stop string in leading whitespace does not count
        for s in stop:
            cut = text.find(s, lead)
            if cut >= 0:
                text = text[:cut]
        return text


def generation_options(base: GenerationSection, **updates: Any) -> GenerationSection:
    """``base`` with the per-call values that are not None, under the same checks as the YAML ones."""
    try:
        return GenerationSection.model_validate(
            {**base.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ValidationError as exc:
        raise config_error_from_validation(exc, prefix="generation", model=GenerationSection) from None


def check_fast_options(gen: GenerationSection) -> None:
    """Refuse generation options the static (fast) decode cannot honour, before any work."""
    if gen.temperature > 0 or gen.stop:
        raise ConfigError(
            "generate.fast", True,
            f"the fast decode is greedy only and takes no stop strings (got temperature={gen.temperature}, "
            f"stop={gen.stop}); use temperature=0 and no stop, or fast=False (CLI: drop --fast)",
        )


def check_model_object(model: Any) -> None:
    """Refuse anything but a transformers causal LM before an adapter pokes at its attributes."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ConfigError(
            "model", f"<{type(model).__name__}>",
            "must be a transformers PreTrainedModel (e.g. AutoModelForCausalLM.from_pretrained(...)) or, for "
            "from_pretrained, a local checkpoint directory path",
        )


def load_config(
    source: ConfigSource = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    registry: Registry | None = None,
) -> SlimConfig:
    """Load a config from a preset name, a YAML path, a dict or a config, apply overrides, validate.

    Strategy names and options are checked against the registry (``registry``, by default the
    process-wide one) here too, so ``config validate`` catches everything that does not depend on the
    model itself. This is ``sliminfer.load_config``; it lives above both the config schema
    (:func:`~sliminfer.core.config.read_config`) and the registry (which imports the schema), so the
    schema never reaches for the registry.
    """
    config = read_config(source, overrides)
    (registry if registry is not None else get_registry()).check_config(config)
    return config


def check_config_fits_checkpoint(config: SlimConfig, registry: Registry, hf_config: Any) -> None:
    """Refuse a config that names layers the checkpoint does not have, from its config.json alone
    (before the weights load; the pipeline checks the loaded model the same way)."""
    if config.pruning is not None:
        schedule = registry.build("schedule", config.pruning.schedule, "pruning.schedule")
        schedule.check_model(registry.adapter_for(hf_config).cls.layers_in(hf_config), "pruning.schedule")
