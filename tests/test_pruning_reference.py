"""Pruned prefill and decode equal an independent full-length masked reference (sliminfer.testing.reference)."""

from __future__ import annotations

import pytest
import torch

from sliminfer import SlimPipeline
from sliminfer.testing.reference import MaskedReference, greedy_decode_both
from sliminfer.testing.tiny_models import ARCHS, tiny_model


def _pruning(layers, budgets, block=16, unit=4, window=4, point="after_attention", name="fixed"):
    schedule = {"name": name, "layers": layers, "budgets": budgets}
    return {
        "pruning": {
            "scorer": {"name": "token_unit", "block_size": block, "unit_size": unit, "window": window},
            "schedule": schedule,
            "prune_point": point,
        }
    }


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_prompt", [301, 250])
@pytest.mark.parametrize("point", ["after_attention", "after_layer"])
def test_pruned_matches_masked_reference(arch: str, seed: int, n_prompt: int, point: str) -> None:
    model = tiny_model(arch, seed=seed)
    pipe = SlimPipeline.from_pretrained(model, config=_pruning([1, 3], [160, 64], point=point))
    ids = torch.randint(0, 256, (1, n_prompt), generator=torch.Generator().manual_seed(seed + 10))
    result = pipe.prefill(ids, reserve_tokens=16)
    tokens = result.tokens_per_layer
    assert tokens[0] == n_prompt and tokens[2] < n_prompt and tokens[4] < tokens[2], tokens
    for kept in result.kept_positions:
        assert torch.all(kept[1:] > kept[:-1])  # original order, no repeats
        assert kept[-1].item() == n_prompt - 1  # the last prompt token always survives
    ref = MaskedReference(model, result.kept_positions)
    ref_logits = ref.prefill(ids)
    assert (result.logits - ref_logits).abs().max().item() <= 1e-4
    ours, theirs, gap = greedy_decode_both(pipe, ref, result, steps=16)
    assert ours == theirs
    assert gap <= 1e-4


def test_ratio_schedule_matches_reference() -> None:
    model = tiny_model("llama", seed=5)
    cfg = {"pruning": {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 8, "window": 1},
                       "schedule": {"name": "ratio", "layers": [0, 2], "ratios": [0.5, 0.5], "block_size": 16}}}
    pipe = SlimPipeline.from_pretrained(model, config=cfg)
    ids = torch.randint(0, 256, (1, 333), generator=torch.Generator().manual_seed(3))
    result = pipe.prefill(ids)
    assert result.tokens_per_layer[1] < 333 and result.tokens_per_layer[3] < result.tokens_per_layer[1]
    assert (result.logits - MaskedReference(model, result.kept_positions).prefill(ids)).abs().max() <= 1e-4


def test_short_prompt_is_not_pruned_and_equals_unpruned() -> None:
    model = tiny_model("qwen3", seed=2)
    ids = torch.randint(0, 256, (1, 100), generator=torch.Generator().manual_seed(0))
    pruned = SlimPipeline.from_pretrained(model, config=_pruning([1, 3], [160, 128])).prefill(ids)
    plain = SlimPipeline.from_pretrained(model).prefill(ids)
    assert torch.equal(pruned.logits, plain.logits)
    assert pruned.tokens_per_layer == [100] * 6


def test_kv_bytes_follow_kept_tokens() -> None:
    model = tiny_model("llama")
    pipe = SlimPipeline.from_pretrained(model, config=_pruning([1, 3], [160, 64]))
    result = pipe.prefill(torch.randint(0, 256, (1, 320), generator=torch.Generator().manual_seed(0)))
    per_token = 2 * 2 * 16 * 4  # K and V, 2 KV heads, head_dim 16, float32
    assert result.kv_bytes_per_layer == [t * per_token for t in result.tokens_per_layer]
    assert result.full_kv_bytes == 320 * 6 * per_token
    assert 0 < result.kv_saved_fraction < 1


@pytest.mark.real_weights
def test_smollm2_pruned_twice_matches_reference(smollm2, essay_ids) -> None:
    model, tokenizer = smollm2
    ids = essay_ids[:, :2500]
    cfg = {"pruning": {"schedule": {"name": "fixed", "layers": [9, 19], "budgets": [1024, 512]}}}
    pipe = SlimPipeline.from_pretrained(model, tokenizer, config=cfg)
    result = pipe.prefill(ids, reserve_tokens=16)
    assert result.tokens_per_layer[10] <= 1024 and result.tokens_per_layer[20] <= 512
    ref = MaskedReference(model, result.kept_positions)
    assert (result.logits - ref.prefill(ids)).abs().max().item() <= 1e-4
    ours, theirs, gap = greedy_decode_both(pipe, ref, result, steps=16)
    assert ours == theirs, (gap, ours, theirs)
