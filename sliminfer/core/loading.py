"""Turning a validated ``model`` config section into a model and tokenizer on a device.

Everything that can be wrong with the source (missing directory, unsupported architecture, corrupted
weights, an attention backend that is not installed) is found here, before weights are read where
possible, and reported with the field that caused it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sliminfer.core.config import ModelSection
from sliminfer.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)


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
    from sliminfer.assets.default_model import (
        default_model_dir,
        is_default_model_name,
        verify_checkpoint,
    )

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


def read_model_config(section: ModelSection) -> tuple[Path, PretrainedConfig]:
    """The checkpoint directory and its transformers config, read without touching the weights, so
    everything that depends on the model (architecture, layer count, positions) is checked first."""
    from transformers import AutoConfig

    path = resolve_source(section.source)
    with _unreadable_checkpoint(section, "config.json"):
        return path, AutoConfig.from_pretrained(path)


def load_model(
    section: ModelSection, before_weights: Callable[[PretrainedConfig], None] | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` as the section says; the tokenizer is None if the checkpoint has none.

    ``before_weights(hf_config)`` may refuse the model (raise) once its config is known, before any
    weight is read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sliminfer.core.registry import get_registry

    device = resolve_device(section.device)
    dtype = resolve_dtype(section.dtype, device)
    check_attention(section.attention)
    path, hf_config = read_model_config(section)
    get_registry().adapter_for(hf_config)  # unsupported architectures fail before weights load
    if before_weights is not None:
        before_weights(hf_config)
    has_tokenizer = any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    with _unreadable_checkpoint(section, "tokenizer files"):  # cheap: read it before the weights
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
    start = time.perf_counter()
    with _unreadable_checkpoint(section, "weights"):
        if section.random_init:
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=section.attention)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=section.attention)
    model.to(device).eval()
    log.info("loaded %s (%s, %d layers%s) on %s as %s in %.1f s", path, hf_config.model_type,
             hf_config.num_hidden_layers, ", random weights" if section.random_init else "", device, dtype,
             time.perf_counter() - start)
    return model, tokenizer


@contextmanager
def _unreadable_checkpoint(section: ModelSection, part: str) -> Iterator[None]:
    """Report a checkpoint file that transformers cannot read as a ConfigError on ``model.source``."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:  # JSONDecodeError is a ValueError
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(
            "model.source", section.source,
            f"its {part} cannot be read ({type(exc).__name__}: {reason}); point model.source at a complete, "
            "undamaged Hugging Face checkpoint directory",
        ) from exc
