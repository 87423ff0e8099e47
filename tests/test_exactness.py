"""Unpruned mode is stock transformers: same last-token logits, same greedy tokens (every tiny
architecture: Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma)."""

from __future__ import annotations

import pytest
import torch

from sliminfer import SlimPipeline
from sliminfer.testing.reference import MaskedReference
from sliminfer.testing.tiny_models import ARCHS, tiny_model


def _random_ids(n: int, seed: int = 1, vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_unpruned_logits_and_greedy_tokens_equal_stock(arch: str, attention: str) -> None:
    model = tiny_model(arch, attention=attention)
    pipe = SlimPipeline.from_pretrained(model)
    ids = _random_ids(203)
    result = pipe.prefill(ids)
    with torch.inference_mode():
        stock_logits = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]
    assert (result.logits - stock_logits).abs().max().item() <= 1e-5
    assert result.tokens_per_layer == [203] * model.config.num_hidden_layers

    ours = pipe.generate(ids, max_new_tokens=32).token_ids
    stock = model.generate(ids, do_sample=False, max_new_tokens=32, min_new_tokens=32)[0, ids.shape[1]:].tolist()
    assert ours == stock


@pytest.mark.parametrize(("arch", "window"), [("mistral", 2048), ("phi3", 262144)])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_sliding_window_that_never_binds_runs_as_full_attention(arch: str, window: int, attention: str) -> None:
    """A window of at least max_position_embeddings (2048 here; Phi-3.5 and Phi-4-mini ship 262144 over
    131072 positions) is accepted: unpruned the pipeline is stock transformers, which applies the windowed
    mask (eager) or skips it (SDPA); pruned (SDPA) it is the masked reference."""
    model = tiny_model(arch, attention=attention, sliding_window=window)
    ids = _random_ids(203)
    pipe = SlimPipeline.from_pretrained(model)
    with torch.inference_mode():
        stock = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]
    assert (pipe.prefill(ids).logits - stock).abs().max().item() <= 1e-5
    stock_tokens = model.generate(ids, do_sample=False, max_new_tokens=16, min_new_tokens=16)[0, ids.shape[1]:]
    assert pipe.generate(ids, max_new_tokens=16).token_ids == stock_tokens.tolist()
    if attention == "sdpa":  # the reference's key masks are boolean, the form SDPA takes
        pruning = {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
                   "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [96, 48]}}
        result = SlimPipeline.from_pretrained(model, config={"pruning": pruning}).prefill(ids)
        assert result.tokens_per_layer[-1] < 203
        gap = (result.logits - MaskedReference(model, result.kept_positions).prefill(ids)).abs().max().item()
        assert gap <= 1e-4


def test_qwen2_with_llama_weights_and_zero_biases_matches_llama() -> None:
    llama = tiny_model("llama", seed=3)
    qwen = tiny_model("qwen2", seed=4)
    state = {k: v for k, v in llama.state_dict().items()}
    with torch.no_grad():
        for name, p in qwen.named_parameters():
            p.copy_(state[name] if name in state else torch.zeros_like(p))
    ids = _random_ids(150)
    a = SlimPipeline.from_pretrained(llama).prefill(ids).logits
    b = SlimPipeline.from_pretrained(qwen).prefill(ids).logits
    assert (a - b).abs().max().item() <= 1e-5


def test_sampling_is_reproducible_with_a_seed() -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model("llama"))
    ids = _random_ids(40)
    a = pipe.generate(ids, max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.9, seed=7).token_ids
    b = pipe.generate(ids, max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.9, seed=7).token_ids
    c = pipe.generate(ids, max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.9, seed=8).token_ids
    assert a == b
    assert a != c


@pytest.mark.real_weights
def test_smollm2_unpruned_matches_stock(smollm2, essay_ids) -> None:
    model, tokenizer = smollm2
    ids = essay_ids[:, :1200]
    pipe = SlimPipeline.from_pretrained(model, tokenizer)
    result = pipe.prefill(ids)
    with torch.inference_mode():
        stock = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]
    assert (result.logits - stock).abs().max().item() <= 1e-5
    ours = pipe.generate(ids, max_new_tokens=32).token_ids
    ref = model.generate(ids, do_sample=False, max_new_tokens=32)[0, ids.shape[1]:].tolist()
    assert ours == ref


@pytest.mark.real_weights
def test_smollm2_chat_answer(smollm2) -> None:
    model, tokenizer = smollm2
    pipe = SlimPipeline.from_pretrained(model, tokenizer)
    out = pipe.generate("What is the capital of France?", max_new_tokens=16)
    assert "Paris" in out.text
    assert out.stopped_by in ("eos", "max_new_tokens")


@pytest.mark.real_weights
def test_qwen2_holding_smollm2_weights_gives_the_llama_logits(smollm2, essay_ids) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    llama, _ = smollm2
    cfg = llama.config
    qwen_cfg = Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=True, use_sliding_window=False,
    )
    qwen = Qwen2ForCausalLM(qwen_cfg).eval()
    state = llama.state_dict()
    with torch.no_grad():
        for name, p in qwen.named_parameters():
            p.copy_(state[name] if name in state else torch.zeros_like(p))  # q/k/v biases: zero
    qwen.config._attn_implementation = "sdpa"
    ids = essay_ids[:, :1000]
    a = SlimPipeline.from_pretrained(llama).prefill(ids).logits
    b = SlimPipeline.from_pretrained(qwen).prefill(ids).logits
    assert (a - b).abs().max().item() <= 1e-5
    assert torch.equal(a.argmax(-1), b.argmax(-1))
