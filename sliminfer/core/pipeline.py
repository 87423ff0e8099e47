"""``SlimPipeline``: the one way in.

It binds a model (through its adapter), the strategies a config names (resolved once here, so no
registry lookup happens per token) and a tokenizer, and offers ``prefill``, ``generate`` and ``stream``.
A prompt is text, chat messages, or token ids (:mod:`sliminfer.core.prompts`); ``generate`` also takes
transformers' ``generation_config``, ``logits_processor`` and ``streamer``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from sliminfer.core.config import SlimConfig, read_config
from sliminfer.core.decoding import DecodingOptions, decoding_options
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.forward import StagedForward
from sliminfer.core.preflight import (
    attention_layers,
    build_prompt_filter,
    check_compile_options,
    check_config_fits_checkpoint,
    check_config_fits_machine,
    check_model_object,
    check_static_options,
    check_tokenizer_object,
    warn_unused_model_section,
)
from sliminfer.core.prompts import check_chat_choice, prompt_ids
from sliminfer.core.registry import Registry, get_registry
from sliminfer.core.results import GenerationResult, PrefillResult
from sliminfer.core.sampling import logits_processors
from sliminfer.decode.eager import eager_generate
from sliminfer.decode.run import static_generate
from sliminfer.decode.streaming import TokenSink, check_streamer, streaming

if TYPE_CHECKING:
    from transformers import GenerationConfig, LogitsProcessor

T = TypeVar("T")
ConfigSource = str | Path | Mapping[str, Any] | SlimConfig | None
#: text, chat messages ([{"role": ..., "content": ...}, ...]), token ids, or an integer tensor [n] / [1, n]
Prompt = str | Sequence[Mapping[str, str]] | Sequence[int] | torch.Tensor


class SlimPipeline:
    """A model with SlimInfer's staged forward pass, strategies and KV cache manager."""

    def __init__(self, model: Any, tokenizer: Any = None, config: SlimConfig | None = None,
                 registry: Registry | None = None) -> None:
        if config is not None and not isinstance(config, SlimConfig):
            raise ConfigError("config", f"<{type(config).__name__}>", "SlimPipeline(model, tokenizer, config) takes a "
                              "SlimConfig (sliminfer.load_config(...)); for a preset name, YAML path or dict use "
                              "SlimPipeline.from_pretrained(model, tokenizer, config=...)")
        self.registry = registry or get_registry()
        self.config = config or SlimConfig()
        self.registry.check_config(self.config)
        check_model_object(model)
        check_tokenizer_object(tokenizer)
        warn_unused_model_section(self.config, model)
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = self.registry.adapter_for(model.config).cls(model)
        self._cache_entry = self.registry.get("cache", self.config.cache.name, "cache.name")
        if self.adapter.layer_devices is not None and not self._cache_entry.cls.spans_devices:
            raise ConfigError("cache.name", self.config.cache.name, "this manager keeps its KV on one device, and this "
                              "model's layers are spread over several (device_map); use cache.name 'gpu', or load "
                              "the model onto one device")
        if self.config.prefill.compile and self.adapter.head_shards is not None:
            raise ConfigError("prefill.compile", True, "not supported with tensor parallelism yet (this model's "
                              "attention heads are sharded over processes); use prefill.compile: false")
        if self.config.decode.mode == "static":
            check_static_options(self.config.generation)
        layer_devices = (d for d in self.adapter.layer_devices or () if d is not None)
        check_compile_options(self.config, {self.device, *layer_devices})
        scorer = schedule = None
        pruning = self.config.pruning
        if pruning is not None:
            scorer = self.registry.build("scorer", pruning.scorer, "pruning.scorer")
            schedule = self.registry.build("schedule", pruning.schedule, "pruning.schedule")
            schedule.check_model(self.adapter.num_layers, "pruning.schedule")
        layers = attention_layers(self.config, schedule, self.adapter.num_layers)
        section = self.config.attention
        attention = self.registry.build("attention", section, "attention") if section is not None else None
        prompt_filter = build_prompt_filter(self.config, self.registry, self.adapter.num_layers)
        self.forward = StagedForward(
            self.adapter, self.registry, scorer, schedule, pruning.prune_point if pruning else "after_attention",
            attention, layers, prompt_filter, self.config.prefill.compile,
        )
        self._cache_options = self.registry.options("cache", self.config.cache, "cache")
        self._static_decoder: Any = None  # the static decode's buffers and graph, kept for the next call

    # construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, source: ConfigSource = None, **overrides: Any) -> SlimPipeline:
        """Build from a preset name, YAML path, dict or config; ``overrides`` are dotted keys
        (``**{"model.dtype": "float32"}``) or ``section__field=value`` keywords."""
        return cls._load(load_config(source, overrides))

    @classmethod
    def from_pretrained(cls, model_or_path: Any, tokenizer: Any = None, config: ConfigSource = None) -> SlimPipeline:
        """Wrap an in-memory ``PreTrainedModel``, or load a local checkpoint directory or a Hugging Face Hub
        model id (``model.source``: :func:`~sliminfer.core.loading.resolve_source`)."""
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
        check_config_fits_machine(config)
        check_tokenizer_object(tokenizer)
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

    def encode(self, prompt: Prompt, chat_template: bool | None = None) -> torch.Tensor:
        """Token ids ``[1, n]`` on the model's device for text, chat messages (rendered with the tokenizer's
        chat template, ``add_generation_prompt=True``) or ready ids (checked: one prompt, integer ids inside
        the vocabulary; see :mod:`sliminfer.core.prompts`). ``chat_template`` (default: the config's
        ``generation.chat_template``) says whether text is wrapped in the template as one user message."""
        check_chat_choice(prompt, chat_template)
        use_chat = self.config.generation.chat_template if chat_template is None else chat_template
        return prompt_ids(prompt, self.tokenizer, self.adapter.vocab_size, use_chat).to(self.device)

    def eos_ids(self) -> set[int]:
        """Token ids that end a generation (the model's generation config and the tokenizer's)."""
        eos: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if value is not None:
                eos.update(value if isinstance(value, (list, tuple)) else [value])
        return eos

    # inference ----------------------------------------------------------------------------------
    def prefill(self, input_ids: Prompt, reserve_tokens: int = 0) -> PrefillResult:
        """Run the prompt through the model (pruning as configured); logits of its last token.
        ``reserve_tokens``: room the cache keeps for that many tokens generated after the prompt."""
        if isinstance(reserve_tokens, bool) or not isinstance(reserve_tokens, Integral) or reserve_tokens < 0:
            raise InputError(f"reserve_tokens: got {reserve_tokens!r}; an int >= 0 (room in the cache for tokens "
                             "generated after the prompt)")
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
                                     cache_advice=self.memory_advice(), pruning=self.config.pruning is not None,
                                     weights_bytes=weights)

    def memory_advice(self) -> list[str]:
        """What an out-of-memory message suggests about the KV cache: the advice of the manager in use, or
        else how to choose each registered manager that saves GPU memory (their own declarations)."""
        in_use = self._cache_entry.cls
        if in_use.memory_advice:
            return [in_use.memory_advice]
        return [e.cls.memory_saving for e in self.registry.entries["cache"].values()
                if e.cls.memory_saving and e.cls is not in_use]

    def generate(
        self,
        prompt_or_ids: Prompt,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        chat_template: bool | None = None,
        fast: bool | None = None,
        *,
        streamer: Any = None,
        logits_processor: Sequence[LogitsProcessor] | None = None,
        generation_config: GenerationConfig | None = None,
    ) -> GenerationResult:
        """Prefill, then decode until EOS, a stop string or ``max_new_tokens``.

        The prompt is text, chat messages or token ids (:meth:`encode`). The options merge, lowest first:
        the config's ``generation:`` section, the fields ``generation_config`` (a transformers
        ``GenerationConfig``) sets, then these keywords (see :mod:`sliminfer.core.decoding`). Repetition
        penalty, min-p, n-gram bans and the other processors and warpers are transformers' own classes,
        applied as ``model.generate`` applies them, with the caller's ``logits_processor`` after the
        built-in processors (:mod:`sliminfer.core.sampling`). A ``streamer`` (``TextStreamer``,
        ``TextIteratorStreamer``) gets the prompt ids, then each token as it is decoded, then ``end()``.

        The decode is the config's ``decode.mode``; ``fast=True`` chooses the static decode for this call
        (``fast=False`` the eager one): static buffers, replayed as a CUDA graph on GPUs (split-KV
        attention and torch.compile; see :mod:`sliminfer.decode`), greedy only, no stop strings, no logits
        processors (each refused with a ConfigError naming it), and decode-step observers are not called.
        It runs all ``max_new_tokens`` steps on the device and cuts the text at EOS afterwards; with a
        streamer it reads each token on the host as it comes and stops at EOS.
        """
        if fast is not None and not isinstance(fast, bool):
            raise ConfigError("generate.fast", fast, "must be True, False or None (None: the config's decode.mode)")
        check_streamer(streamer)
        ids = self.encode(prompt_or_ids, chat_template)
        options = decoding_options(
            self.config.generation,
            {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
             "seed": seed, "stop": stop, "chat_template": chat_template},
            self.eos_ids(), ids.shape[1], generation_config, logits_processor,
        )
        if options.gen.stop and self.tokenizer is None:
            raise ConfigError("generation.stop", list(options.gen.stop), "stop strings are matched on the decoded "
                              "text and this pipeline has no tokenizer; give it one, or stop by EOS / max_new_tokens")
        static = self.config.decode.mode == "static" if fast is None else fast
        if static:
            check_static_options(options.gen, self._processor_options(options, ids.shape[1]))
        self.forward.check_prompt(ids, options.gen.max_new_tokens)
        with streaming(streamer, ids, options.eos) as sink:
            if static:
                return self._oom_guarded(lambda: self._generate_static(ids, options, sink), "generate", ids)
            return self._oom_guarded(lambda: eager_generate(self, ids, options, sink), "generate", ids)

    def stream(self, prompt_or_ids: Prompt, **kwargs: Any) -> Generator[str, None, GenerationResult]:
        """Yield the text of the answer piece by piece as it is decoded; the generator's return value is
        the :class:`GenerationResult` (``result = yield from pipe.stream(...)``).

        The decode runs on a worker thread feeding a transformers ``TextIteratorStreamer`` (prompt skipped,
        special tokens dropped); ``kwargs`` are those of :meth:`generate`, except ``streamer``. A keyword
        generate() does not take, and a pipeline without a tokenizer, are refused here, when ``stream`` is
        called (not at the first ``next``); an error in the decode is raised once the text produced before it
        has been yielded. Leaving the loop early waits for the decode to finish (it cannot be interrupted
        between tokens).
        """
        if "streamer" in kwargs:
            raise ConfigError("stream.streamer", kwargs["streamer"], "stream() brings its own streamer; pass yours "
                              "to generate(streamer=...) instead")
        taken = [name for name in inspect.signature(self.generate).parameters if name != "prompt_or_ids"]
        unknown = [name for name in kwargs if name not in taken]
        if unknown:
            raise ConfigError(f"stream.{unknown[0]}", kwargs[unknown[0]], f"not a keyword of generate(), which "
                              f"stream() passes them to; it takes {', '.join(n for n in taken if n != 'streamer')}")
        if self.tokenizer is None:
            raise InputError("stream: text needs a tokenizer and this pipeline has none; call generate() with "
                             "token ids instead")
        return self._streamed(prompt_or_ids, kwargs)

    def _streamed(self, prompt_or_ids: Prompt, kwargs: Mapping[str, Any]) -> Generator[str, None, GenerationResult]:
        """:meth:`stream`'s generator, once its arguments are checked."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict[str, Any] = {}

        def decode() -> None:
            try:
                outcome["result"] = self.generate(prompt_or_ids, streamer=streamer, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader below
                outcome["error"] = exc
                streamer.end()  # refused before the decode started: the reader must not wait for text

        worker = threading.Thread(target=decode, name="sliminfer-stream", daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _processor_options(self, options: DecodingOptions, prompt_tokens: int) -> list[str]:
        """The options that make logits processors (what the static decode cannot run), as ``name=value``."""
        if not logits_processors(options, prompt_tokens, self.device):
            return []
        named = [f"{k}={v!r}" for k, v in options.processor_fields.items()]
        return named + ([f"logits_processor={list(options.logits_processor)!r}"] if options.logits_processor else [])

    def _generate_static(self, ids: torch.Tensor, options: DecodingOptions, sink: TokenSink | None) -> GenerationResult:
        out = static_generate(self, ids, options.gen.max_new_tokens, options=self.config.decode,
                              decoder=self._static_decoder, eos=options.eos, sink=sink)
        # reused (graph included) while later prompts fit, unless it holds its request's state (offload)
        self._static_decoder = out.decoder if out.decoder is not None and out.decoder.reusable else None
        return out


def load_config(
    source: ConfigSource = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    registry: Registry | None = None,
) -> SlimConfig:
    """Load a config from a preset name, a YAML path, a dict or a config, apply overrides, validate.
    How overrides apply (a mapping merges into its section, a strategy with another name replaces it, a key
    given twice is refused): :func:`~sliminfer.core.config.read_config`.

    Strategy names and options are checked against the registry (``registry``, by default the
    process-wide one) here too, so ``config validate`` catches everything that does not depend on the
    model itself. This is ``sliminfer.load_config``; it lives above both the config schema
    (:func:`~sliminfer.core.config.read_config`) and the registry (which imports the schema), so the
    schema never reaches for the registry.
    """
    config = read_config(source, overrides)
    (registry if registry is not None else get_registry()).check_config(config)
    return config
