"""Turning a validated ``model`` config section into a model and tokenizer on a device.

Everything that can be wrong with the source (missing directory, unsupported architecture, corrupted
weights, an attention backend that is not installed) is found here, before weights are read where
possible, and reported with the field that caused it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from sliminfer.core.config import ModelSection
from sliminfer.core.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("model.device", device, "CUDA is not available on this machine; use cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def resolve_source(source: str) -> Path:
    """A checkpoint directory for ``model.source``: the packaged default model, or a local directory."""
    from sliminfer.assets.default_model import default_model_dir, is_default_model_name, verify_checkpoint

    if is_default_model_name(source):
        return default_model_dir()
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            "model.source",
            source,
            "must be a local Hugging Face checkpoint directory containing config.json, or the packaged default "
            "model 'smollm2-135m-instruct' (model hubs are not contacted)",
        )
    verify_checkpoint(path)
    return path


def check_attention(attention: str) -> None:
    if attention.startswith("flash_attention") and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "model.attention", attention, "needs the flash-attn package (pip install 'sliminfer[flash-attn]'); "
            "sdpa works everywhere"
        )


def load_model(section: ModelSection) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` as the section says; the tokenizer is None if the checkpoint has none."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sliminfer.core.registry import get_registry

    device = resolve_device(section.device)
    dtype = resolve_dtype(section.dtype, device)
    check_attention(section.attention)
    path = resolve_source(section.source)
    hf_config = AutoConfig.from_pretrained(path)
    get_registry().adapter_for(hf_config)  # unsupported architectures fail before weights load
    if section.random_init:
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=section.attention)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=section.attention)
    model.to(device).eval()
    has_tokenizer = any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
    return model, tokenizer
