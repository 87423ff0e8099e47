"""What is checked before any work, so that a bad config, model or option fails early with a ConfigError
naming the field: the config against a checkpoint's config.json (before its weights load) and against this
machine (a device or a compile it cannot run), the model and tokenizer objects a pipeline is given, and the
options the static decode cannot honour. Also the two builders those checks share with the pipeline (the
prompt filter, the layers of the attention strategy).

Why a module of its own: :mod:`sliminfer.core.pipeline` runs the checks when a pipeline is built, and the
command line (``config validate``, ``run``, ``demo``) runs them without building one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from sliminfer.core.config import GenerationSection, SlimConfig
from sliminfer.core.errors import ConfigError
from sliminfer.core.registry import Registry
from sliminfer.decode.compile_cache import check_can_compile, compile_cache_enabled
from sliminfer.strategies.attention import strategy_layers

if TYPE_CHECKING:
    from sliminfer.strategies.base import Schedule
    from sliminfer.strategies.prompt_filter import PromptFilter

log = logging.getLogger(__name__)


def check_static_options(gen: GenerationSection, processors: Sequence[str] = ()) -> None:
    """Refuse generation options the static decode cannot honour, before any work: sampling, stop strings,
    and the logits processors ``processors`` names (``name=value`` of what asked for them)."""
    got = [*([f"temperature={gen.temperature}"] if gen.temperature > 0 else []),
           *([f"stop={gen.stop}"] if gen.stop else []), *processors]
    if got:
        raise ConfigError(
            "decode.mode", "static",
            f"the static decode (fast=True, --fast) is greedy only and takes no stop strings and no logits "
            f"processors (got {', '.join(got)}); drop them, or use the eager decode (fast=False, decode.mode eager; "
            "CLI: drop --fast)",
        )


def check_model_object(model: Any) -> None:
    """Refuse anything but a transformers causal LM (with its LM head) before an adapter pokes at its
    attributes."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ConfigError(
            "model", f"<{type(model).__name__}>",
            "must be a transformers PreTrainedModel (e.g. AutoModelForCausalLM.from_pretrained(...)) or, for "
            "from_pretrained, a local checkpoint directory path or a Hugging Face Hub model id",
        )
    heads = getattr(model, "get_output_embeddings", None)
    if callable(heads) and heads() is None:
        raise ConfigError("model", f"<{type(model).__name__}>", "a base model without its LM head cannot generate; "
                          "load the causal LM (AutoModelForCausalLM.from_pretrained(...)), which holds this one as "
                          "its .model")


def warn_unused_model_section(config: SlimConfig, model: torch.nn.Module) -> None:
    """A ``model.device`` / ``model.dtype`` that an in-memory model does not match: sliminfer never moves or
    casts a model it did not load, so the setting has no effect here; said once, not silently ignored."""
    param = next(model.parameters(), None)
    if param is None:
        return
    wanted = config.model
    device = torch.device(wanted.device) if wanted.device != "auto" else None
    if device is not None and (device.type != param.device.type or
                               device.index is not None and device.index != param.device.index):
        log.warning("model.device is %r but this model is on %s: sliminfer does not move a model it did not load; "
                    "move it yourself (model.to(...)) or leave model.device at auto", wanted.device, param.device)
    if wanted.dtype != "auto" and getattr(torch, wanted.dtype) != param.dtype:
        log.warning("model.dtype is %r but this model's weights are %s: sliminfer does not cast a model it did not "
                    "load; cast it yourself (model.to(dtype)) or leave model.dtype at auto", wanted.dtype,
                    str(param.dtype).removeprefix("torch."))


def check_tokenizer_object(tokenizer: Any) -> None:
    """Refuse a tokenizer that cannot encode and decode (a checkpoint path given in its place, say) when the
    pipeline is built, not at the first text prompt."""
    if tokenizer is not None and not (callable(tokenizer) and callable(getattr(tokenizer, "decode", None))):
        raise ConfigError("tokenizer", tokenizer if isinstance(tokenizer, str) else f"<{type(tokenizer).__name__}>",
                          "must be a transformers tokenizer (AutoTokenizer.from_pretrained(...)) or None (token ids "
                          "only)")


def check_config_fits_checkpoint(config: SlimConfig, registry: Registry, hf_config: Any) -> None:
    """Refuse a config that names layers the checkpoint does not have, and a checkpoint its adapter refuses
    (:meth:`~sliminfer.models.base.ModelAdapter.check_hf_config`), from its config.json alone (before the
    weights load; the pipeline checks the loaded model the same way)."""
    adapter = registry.adapter_for(hf_config).cls
    adapter.check_hf_config(hf_config)
    num_layers = adapter.layers_in(hf_config)
    schedule = None
    if config.pruning is not None:
        schedule = registry.build("schedule", config.pruning.schedule, "pruning.schedule")
        schedule.check_model(num_layers, "pruning.schedule")
    attention_layers(config, schedule, num_layers)
    build_prompt_filter(config, registry, num_layers)


def check_config_fits_machine(config: SlimConfig) -> None:
    """Refuse, before any weight loads, what this machine cannot run: a ``model.device`` it lacks,
    ``prefill.compile`` / ``decode.compile: true`` where torch.compile cannot run on that device (the pipeline
    checks the loaded model's devices the same way, for a model built elsewhere or spread over several), a
    ``SLIMINFER_COMPILE_CACHE`` it does not understand, and static-decode options (``fast=True``, ``--fast``)
    this device cannot run: a CUDA graph or the triton / flash kernel without CUDA, autotune without a compile."""
    from sliminfer.core.loading import resolve_device, resolve_dtype
    from sliminfer.decode.static import resolve_static_options

    device = resolve_device(config.model.device)
    check_compile_options(config, {device})
    compile_cache_enabled()
    resolve_static_options(config.decode, device, resolve_dtype(config.model.dtype, device))


def check_compile_options(config: SlimConfig, devices: Iterable[torch.device]) -> None:
    """``prefill.compile`` / ``decode.compile: true`` refused where torch.compile cannot run on one of
    ``devices``; ``decode.compile`` null is not checked (a failed compile there falls back to the eager step,
    with a warning)."""
    for field, on in (("prefill.compile", config.prefill.compile), ("decode.compile", config.decode.compile)):
        if on:
            check_can_compile(field, devices)


def build_prompt_filter(config: SlimConfig, registry: Registry, num_layers: int) -> PromptFilter | None:
    """The config's prompt filter, checked against a model of ``num_layers`` layers (a ConfigError naming
    ``prompt_filter.layer``), or None without a ``prompt_filter:`` section."""
    if config.prompt_filter is None:
        return None
    prompt_filter: PromptFilter = registry.build("prompt_filter", config.prompt_filter, "prompt_filter")
    prompt_filter.check_model(num_layers, "prompt_filter")
    return prompt_filter


def attention_layers(config: SlimConfig, schedule: Schedule | None, num_layers: int) -> frozenset[int]:
    """The layers whose prefill attention the config's ``attention:`` strategy computes (none without the
    section), checked against the model's ``num_layers`` (a ConfigError naming ``attention.layers``)."""
    if config.attention is None:
        return frozenset()
    return strategy_layers(config.attention.layers, schedule, num_layers)
