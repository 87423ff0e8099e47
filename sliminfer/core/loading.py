"""Turning a validated ``model`` config section into a model and tokenizer on a device.

Everything that can be wrong with the source (missing directory, a Hub model that is not in the cache
when offline, unsupported architecture, corrupted weights, an attention backend that is not installed) is
found here, before weights are read (or downloaded) where possible, and reported with the field that
caused it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sliminfer.core.config import ModelSection
from sliminfer.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)


def resolve_device(device: str, field: str = "model.device") -> torch.device:
    """The device ``device`` (``model.device``'s forms) names on this machine; a CUDA device this machine lacks
    is refused naming ``field`` (the config field, or a command-line flag)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(field, device, "CUDA is not available on this machine; use cpu or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(field, device, f"this machine has {count} CUDA device(s): use cuda:0 to cuda:{count - 1}")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


@dataclass(frozen=True)
class Checkpoint:
    """What ``model.source`` resolved to: ``path`` holds config.json and the tokenizer files; the weights
    load with ``from_pretrained(weights, **options)`` (the folder itself for a local checkpoint, the Hub id
    pinned to the cached snapshot's commit for a Hub model: :mod:`sliminfer.core.hub_source`)."""

    path: Path
    weights: str | Path
    options: dict[str, Any] = field(default_factory=dict)


def resolve_source(source: str, download: bool = True) -> Checkpoint:
    """The checkpoint of ``model.source``: the packaged default model, a local directory, or a Hugging Face
    Hub id (a string that names no local path and reads as ``org/name``), found in the Hugging Face cache
    and, online and with ``download``, downloaded into it."""
    from sliminfer.assets.default_model import (
        default_model_dir,
        is_default_model_name,
        verify_checkpoint,
    )
    from sliminfer.core.hub_source import is_hub_id, resolve_hub_id

    if is_default_model_name(source):
        path = default_model_dir()
        return Checkpoint(path, path)
    path = Path(source).expanduser()
    if not path.exists() and is_hub_id(source):
        snapshot = resolve_hub_id(source, download)
        if not (snapshot.path / "config.json").is_file():
            raise ConfigError("model.source", source, f"its Hugging Face snapshot {snapshot.path} holds no "
                              "config.json, so it is no transformers model; give a model id whose repository has one")
        return Checkpoint(snapshot.path, source, snapshot.weights_options())
    if not (path / "config.json").is_file():
        raise ConfigError(
            "model.source",
            source,
            "must be a local Hugging Face checkpoint directory containing config.json, a Hugging Face Hub model id "
            "('org/name', from the Hugging Face cache or downloaded into it), or the packaged default model "
            "'smollm2-135m-instruct'",
        )
    verify_checkpoint(path)
    return Checkpoint(path, path)


def check_attention(attention: str) -> None:
    if attention.startswith("flash_attention") and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "model.attention", attention, "needs the flash-attn package (pip install 'sliminfer[flash-attn]'); "
            "sdpa works everywhere"
        )


def read_model_config(section: ModelSection, download: bool = True) -> tuple[Checkpoint, PretrainedConfig]:
    """The checkpoint and its transformers config, read without touching the weights, so everything that
    depends on the model (architecture, layer count, positions) is checked first; ``download=False``
    fetches nothing from the Hub (a Hub model must be in the cache)."""
    from transformers import AutoConfig

    checkpoint = resolve_source(section.source, download)
    with _unreadable_checkpoint(section, "config.json"):
        return checkpoint, AutoConfig.from_pretrained(checkpoint.path)


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
    checkpoint, hf_config = read_model_config(section)
    # unsupported architectures and configurations (a sliding window that binds) fail before weights load
    get_registry().adapter_for(hf_config).cls.check_hf_config(hf_config)
    if before_weights is not None:
        before_weights(hf_config)
    path = checkpoint.path
    has_tokenizer = any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    with _unreadable_checkpoint(section, "tokenizer files"):  # cheap: read it before the weights
        tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
    start = time.perf_counter()
    with _unreadable_checkpoint(section, "weights"):
        if section.random_init:
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=section.attention)
        else:
            model = AutoModelForCausalLM.from_pretrained(checkpoint.weights, dtype=dtype,
                                                         attn_implementation=section.attention, **checkpoint.options)
    model.to(device).eval()
    log.info("loaded %s (%s, %d layers%s) on %s as %s in %.1f s", section.source, hf_config.model_type,
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
            "undamaged Hugging Face checkpoint directory or Hub model",
        ) from exc
