"""Tiny random Llama / Qwen2 / Qwen3 / Mistral / Phi-3 / Gemma models built in-process (no downloads), with
fixed seeds.

Six layers of width 64 run a few hundred tokens in milliseconds on a CPU, so the exactness tests and the
conformance kit (:mod:`sliminfer.testing.conformance`) can afford fp32 models of every architecture.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

COMMON: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "eos_token_id": None,
    "bos_token_id": 0,
    "pad_token_id": None,
}

#: the architectures :func:`tiny_model` builds, by their transformers ``model_type``
ARCHS = ("llama", "qwen2", "qwen3", "mistral", "phi3", "gemma")
#: those with separate q/k/v and gate/up linears, of which the static decoder fuses copies (Phi-3's
#: ``qkv_proj`` and ``gate_up_proj`` are one matmul each already: it copies nothing)
FUSABLE_ARCHS = tuple(arch for arch in ARCHS if arch != "phi3")


def _build(arch: str, kwargs: dict[str, Any]) -> torch.nn.Module | None:
    """The architecture's model from ``COMMON`` and the overrides, with what makes each one itself: Qwen3's
    and Gemma's head_dim apart from the width, Mistral without its default 4096-token window (a window that
    binds is refused), Phi-3 rotating half of each head (Phi-4-mini rotates 3/4: partial RoPE matters)."""
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**kwargs))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kwargs))
    if arch == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**{"head_dim": 16, **kwargs}))
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(**{"sliding_window": None, **kwargs}))
    if arch == "phi3":
        return Phi3ForCausalLM(Phi3Config(**{"partial_rotary_factor": 0.5, **kwargs}))
    if arch == "gemma":
        return GemmaForCausalLM(GemmaConfig(**{"head_dim": 16, **kwargs}))
    return None


def tiny_model(arch: str = "llama", seed: int = 0, attention: str = "sdpa", **overrides: Any) -> torch.nn.Module:
    """A float32 tiny model of ``arch``; biases of Qwen2 and the norms (Qwen3's q/k norms too) are
    randomised, so that they matter."""
    torch.manual_seed(seed)
    model = _build(arch, {**COMMON, **overrides})
    if model is None:
        raise ValueError(f"no tiny model for {arch!r}; tiny_model builds {', '.join(ARCHS)}")
    with torch.no_grad():  # random init is tiny; make norms and biases non-trivial so they matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    model.config._attn_implementation = attention
    return model.eval()


def random_prompt(n: int, seed: int = 0, vocab: int = COMMON["vocab_size"]) -> torch.Tensor:
    """``[1, n]`` token ids drawn from a seeded generator (the global RNG is left alone)."""
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))
