"""Tiny random Llama / Qwen2 / Qwen3 models built in-process (no downloads), with fixed seeds.

Six layers of width 64 run a few hundred tokens in milliseconds on a CPU, so the exactness tests and the
conformance kit (:mod:`sliminfer.testing.conformance`) can afford fp32 models of every architecture.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
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
ARCHS = ("llama", "qwen2", "qwen3")


def tiny_model(arch: str = "llama", seed: int = 0, attention: str = "sdpa", **overrides: Any) -> torch.nn.Module:
    """A float32 tiny model of ``arch``; biases of Qwen2 and q/k norms of Qwen3 are randomised too."""
    torch.manual_seed(seed)
    kwargs = {**COMMON, **overrides}
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**kwargs))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kwargs))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **kwargs))
    else:
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
