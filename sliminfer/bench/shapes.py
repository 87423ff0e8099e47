"""Built-in model shapes: real architectures' dimensions as transformers configs, built in code.

Speed does not depend on weight values once the pruning budgets are fixed, so a model with random
weights and a real model's dimensions times the same kernels as the real checkpoint, without a hub
or a 16 GB download. Numbers from such a model are labelled "random weights, speed only".
"""

from __future__ import annotations

from typing import Any

import torch

from sliminfer.core.errors import UnknownNameError

RANDOM_LABEL = "random weights, speed only"

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
_NO_STOP = dict(eos_token_id=None, pad_token_id=None)  # random weights: never stop early

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-3.1-8b": ("llama", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_parameters=_LLAMA3_ROPE, tie_word_embeddings=False, bos_token_id=128000,
        **_NO_STOP)),
    "qwen2.5-7b": ("qwen2", dict(  # q/k/v biases are built into Qwen2's attention
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
        use_sliding_window=False, bos_token_id=151643, **_NO_STOP)),
    "smollm2-135m": ("llama", dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
        bos_token_id=1, **_NO_STOP)),
    "tiny-llama": ("llama", dict(  # for tests and CPU smoke runs
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rope_parameters={"rope_type": "default",
        "rope_theta": 10000.0}, bos_token_id=0, **_NO_STOP)),
    "tiny-qwen2": ("qwen2", dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rope_parameters={"rope_type": "default",
        "rope_theta": 10000.0}, use_sliding_window=False, bos_token_id=0, **_NO_STOP)),
}


def shape_names() -> list[str]:
    return sorted(SHAPES)


def shape_config(name: str) -> Any:
    """The transformers config of a built-in shape."""
    from transformers import LlamaConfig, Qwen2Config

    if name not in SHAPES:
        raise UnknownNameError("model shape", name, SHAPES)
    family, kwargs = SHAPES[name]
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[family]
    return cls(**kwargs)


def build_random_model(name: str, dtype: torch.dtype, device: torch.device, attention: str = "sdpa",
                       seed: int = 0) -> Any:
    """A model of shape ``name`` with random weights, created directly on ``device`` (fast on a GPU)."""
    from transformers import AutoModelForCausalLM

    config = shape_config(name)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    return model.to(device).eval()
