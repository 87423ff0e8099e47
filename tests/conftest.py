"""Shared fixtures: the real default model (fetched once per machine) and its tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct in float32 on the CPU."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from sliminfer.assets.default_model import default_model_dir

    path = default_model_dir(progress=False)
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def essay_ids(smollm2):
    """The first 3,000 tokens of the Paul Graham essays."""
    import torch

    from sliminfer.assets.texts import essay_text

    _, tokenizer = smollm2
    text = essay_text(progress=False)[:20000]
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:3000]])
