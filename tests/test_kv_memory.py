"""The KV-memory acceptance line: the paper's Llama-3.1-8B schedule saves exactly the memory it reports.

Why: method.md checks the schedule by its KV bytes (0.797 / 1.109 / 1.422 / 1.734 GiB of prompt KV
at 8k / 16k / 24k / 32k tokens, 20.3 / 44.5 / 52.6 / 56.6 % saved). An off-by-one layer, a budget
applied one layer late or a tail counted twice all move these figures, so they are measured through
the real pipeline, not recomputed from the schedule.

How, without a GPU: how many tokens each layer holds depends only on the layer count, the schedule
and the prompt length, never on the model's width. So the prefill runs on a 32-layer Llama as narrow
as transformers allows (one KV head; CPU attention costs grow with the head count, not the head
size), on random ids of the real lengths. Bytes then follow from the token counts and Llama-3.1-8B's
per-token KV size; the cache's own byte accounting is checked against the same counts.
"""

from __future__ import annotations

import pytest
import torch

from sliminfer.core.config import SlimConfig
from sliminfer.core.pipeline import SlimPipeline
from sliminfer.testing.tiny_models import tiny_model

GIB = 1 << 30
LAYERS = 32
PRUNE_AFTER, BUDGETS, BLOCK = [9, 19, 29], [8192, 4096, 2048], 64
# Llama-3.1-8B: 2 (K and V) x 8 KV heads x head_dim 128 x 2 bytes (bf16) = 4 KiB per token per layer
LLAMA_8B_KV_BYTES_PER_TOKEN = 2 * 8 * 128 * 2

PAPER = {  # prompt tokens -> (prompt KV in GiB, saved fraction in %), as method.md and the paper give them
    8192: (0.797, 20.3),
    16384: (1.109, 44.5),
    24576: (1.422, 52.6),
    32768: (1.734, 56.6),
}

SLIM = {
    "pruning": {
        "scorer": {"name": "token_unit", "block_size": BLOCK, "unit_size": 8, "window": 4},
        "schedule": {"name": "fixed", "layers": PRUNE_AFTER, "budgets": BUDGETS},
    }
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(
        "llama",
        num_hidden_layers=LAYERS,
        hidden_size=8,
        intermediate_size=8,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=4,
        max_position_embeddings=32768,
    )


@pytest.fixture(scope="module")
def slim(model) -> SlimPipeline:
    return SlimPipeline(model, config=SlimConfig.model_validate(SLIM))


@pytest.fixture(scope="module")
def full(model) -> SlimPipeline:
    return SlimPipeline(model, config=SlimConfig())


def expected_tokens_per_layer(n: int) -> list[int]:
    """Layers 0..9 see every token; the budget after layer L applies from layer L + 1 on."""
    counts, current = [], n
    for layer in range(LAYERS):
        counts.append(current)
        if layer in PRUNE_AFTER:
            current = min(current, BUDGETS[PRUNE_AFTER.index(layer)])
    return counts


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
@pytest.mark.parametrize("n", list(PAPER))
def test_llama31_8b_schedule_prompt_kv_matches_paper(slim, n):
    result = slim.prefill(random_ids(n))

    assert result.tokens_per_layer == expected_tokens_per_layer(n)
    for layer, positions in enumerate(result.kept_positions):
        assert torch.all(positions[1:] > positions[:-1]), f"layer {layer}: positions not in original order"
        if layer > PRUNE_AFTER[0] and positions.numel() < n:  # sink, last block and question always kept
            assert positions[:BLOCK].tolist() == list(range(BLOCK))
            assert positions[-BLOCK:].tolist() == list(range(n - BLOCK, n))

    # the cache holds exactly those tokens (its bytes are the tiny model's per-token size times them)
    tiny_per_token = result.full_kv_bytes // (n * LAYERS)
    assert result.kv_bytes_per_layer == [t * tiny_per_token for t in result.tokens_per_layer]

    gib = sum(result.tokens_per_layer) * LLAMA_8B_KV_BYTES_PER_TOKEN / GIB
    full_gib = n * LAYERS * LLAMA_8B_KV_BYTES_PER_TOKEN / GIB
    paper_gib, paper_saved = PAPER[n]
    assert round(gib, 3) == paper_gib
    assert full_gib == n // 8192  # 1 / 2 / 3 / 4 GiB unpruned
    assert round(100 * result.kv_saved_fraction, 1) == paper_saved
    assert round(100 * (1 - gib / full_gib), 1) == paper_saved


def test_schedule_counts_the_tail_inside_each_budget(slim):
    """5000 tokens = 78 blocks + 8: untouched at layer 9, then 63 / 31 blocks plus the 8-token tail."""
    result = slim.prefill(random_ids(5000, seed=1))

    assert result.tokens_per_layer == [5000] * 20 + [63 * 64 + 8] * 10 + [31 * 64 + 8] * 2
    assert result.kept_positions[-1][-8:].tolist() == list(range(4992, 5000))


@pytest.mark.parametrize("n", [1, 100, 2000, 2047, 2048])
def test_prompt_within_every_budget_is_not_pruned(slim, full, n):
    ids = random_ids(n, seed=n)

    pruned = slim.prefill(ids)
    unpruned = full.prefill(ids)

    assert torch.equal(pruned.logits, unpruned.logits)  # bitwise: the same computation
    assert pruned.tokens_per_layer == [n] * LAYERS
    for positions in pruned.kept_positions:
        assert torch.equal(positions, torch.arange(n))
    assert pruned.kv_bytes_per_layer == unpruned.kv_bytes_per_layer
    assert pruned.kv_saved_fraction == 0.0
