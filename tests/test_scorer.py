"""The token-unit scorer and block selection, checked against independent plain-Python versions.

Why: the scorer decides which prompt tokens every later layer keeps, and a wrong GQA grouping, a
missing ``abs`` or a unit/block mix-up still returns plausible-looking scores. So the vectorised
``TokenUnitScorer.score_blocks`` is compared with a slow loop-over-blocks/units/heads reference in
float64 written straight from method.md, and the selection helpers are checked for the invariants
the pipeline relies on (forced sink/last block/tail, top-scored blocks, budget, order).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from sliminfer.strategies.block_selection import blocks_to_keep, select_kept_indices
from sliminfer.strategies.token_unit import TokenUnitConfig, TokenUnitScorer

SEEDS = (0, 1, 2, 3)
HEADS = {"gqa": (8, 2), "mha": (4, 4)}
SIZES = ((64, 8), (16, 4), (32, 32), (8, 1))


def reference_block_scores(queries: torch.Tensor, keys: torch.Tensor, block_size: int, unit_size: int) -> list[list[float]]:
    """method.md's definition, one number at a time, in Python floats (float64)."""
    q_all, k_all = queries.tolist(), keys.tolist()  # exact: every float32/bfloat16 value is a float64
    q_heads, kv_heads = len(q_all[0]), len(k_all[0])
    window, n_tokens, head_dim = len(q_all[0][0]), len(k_all[0][0]), len(q_all[0][0][0])
    group_size = q_heads // kv_heads
    out = []
    for qb, kb in zip(q_all, k_all):
        local_q = [[sum(qb[h][t][i] for t in range(window)) / window for i in range(head_dim)] for h in range(q_heads)]
        block_scores = []
        for block in range(n_tokens // block_size):
            unit_scores = []
            for unit in range(block_size // unit_size):
                first = block * block_size + unit * unit_size
                total = 0.0
                for h in range(q_heads):
                    g = h // group_size
                    k_rep = [sum(kb[g][first + t][i] for t in range(unit_size)) / unit_size for i in range(head_dim)]
                    total += abs(sum(a * b for a, b in zip(local_q[h], k_rep)))
                unit_scores.append(total / q_heads)
            block_scores.append(max(unit_scores))
        out.append(block_scores)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("block_size,unit_size", SIZES, ids=[f"b{b}u{u}" for b, u in SIZES])
@pytest.mark.parametrize("window", [1, 4])
@pytest.mark.parametrize("heads", list(HEADS), ids=list(HEADS))
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_score_blocks_matches_reference(seed, heads, window, block_size, unit_size, dtype):
    q_heads, kv_heads = HEADS[heads]
    batch, n_blocks, head_dim = 2, 5, 16
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(batch, q_heads, window, head_dim, generator=gen).to(dtype)
    keys = torch.randn(batch, kv_heads, n_blocks * block_size, head_dim, generator=gen).to(dtype)
    scorer = TokenUnitScorer(TokenUnitConfig(block_size=block_size, unit_size=unit_size, window=window))

    scores = scorer.score_blocks(queries, keys)

    assert scores.shape == (batch, n_blocks)
    assert scores.dtype == torch.float32
    expected = torch.tensor(reference_block_scores(queries, keys, block_size, unit_size), dtype=torch.float64)
    torch.testing.assert_close(scores.double(), expected, rtol=2e-5, atol=1e-6)


def test_score_blocks_uses_each_query_heads_own_kv_group():
    """A unit aligned with KV head 1 only scores through the query heads of group 1 (heads 4..7)."""
    q_heads, kv_heads, d, block, unit = 8, 2, 4, 8, 4
    queries = torch.zeros(1, q_heads, 1, d)
    queries[0, 4:, 0, 0] = 1.0  # only group-1 heads look along dimension 0
    keys = torch.zeros(1, kv_heads, 2 * block, d)
    keys[0, 0, 0:unit, 0] = 10.0  # block 0: aligned, but in KV head 0 (group 0 queries are zero)
    keys[0, 1, block + unit :, 0] = -2.0  # block 1, second unit: anti-aligned in KV head 1 (abs counts)
    scorer = TokenUnitScorer(TokenUnitConfig(block_size=block, unit_size=unit, window=1))

    scores = scorer.score_blocks(queries, keys)[0]

    assert scores.tolist() == [0.0, pytest.approx(2.0 * 4 / 8)]


# --- blocks_to_keep -----------------------------------------------------------------------------


def test_blocks_to_keep_none_when_the_budget_keeps_everything():
    assert blocks_to_keep(1000, 64, 1000) is None
    assert blocks_to_keep(1000, 64, 5000) is None
    assert blocks_to_keep(1024, 64, 1024) is None
    assert blocks_to_keep(100, 64, 10) is None  # one full block: nothing to drop beyond the forced ones
    assert blocks_to_keep(150, 64, 10) is None  # two full blocks: both are forced


def test_blocks_to_keep_counts_the_tail_and_keeps_at_least_two_blocks():
    assert blocks_to_keep(1000, 64, 512) == 7  # 1000 = 15 blocks + 40 tail; 7 * 64 + 40 = 488 <= 512
    assert blocks_to_keep(1024, 64, 512) == 8
    assert blocks_to_keep(1000, 64, 10) == 2
    assert blocks_to_keep(1000, 64, 0) == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_blocks_to_keep_properties(seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(300):
        block = int(torch.randint(1, 80, (1,), generator=gen))
        n = int(torch.randint(1, 40 * block, (1,), generator=gen))
        budget = int(torch.randint(1, n + 2 * block, (1,), generator=gen))
        n_full, tail = divmod(n, block)
        keep = blocks_to_keep(n, block, budget)
        # None exactly when nothing can be dropped: the budget covers the prompt, or every full block is forced
        assert (keep is None) == (budget >= n or n_full <= 2)
        if keep is None:
            continue
        assert 2 <= keep < n_full
        if keep > 2:
            assert keep * block + tail <= budget  # the budget counts the tail
        assert (keep + 1) * block + tail > budget  # and no further whole block would fit


# --- select_kept_indices -----------------------------------------------------------------------


def expected_kept(scores: list[float], n_tokens: int, block: int, keep_blocks: int) -> list[int]:
    """Forced blocks (first, last), then the best-scored others, then the tail; in original order."""
    n_full = len(scores)
    others = sorted(range(1, n_full - 1), key=lambda b: scores[b], reverse=True)
    blocks = sorted({0, n_full - 1, *others[: keep_blocks - 2]})
    return [b * block + i for b in blocks for i in range(block)] + list(range(n_full * block, n_tokens))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("block", [1, 8, 64])
def test_select_kept_indices_keeps_top_blocks_and_forced_ones(seed, block):
    gen = torch.Generator().manual_seed(seed)
    for n_full, tail in itertools.product((3, 4, 9, 40), (0, 1, block - 1)):
        if tail >= block:
            continue
        n_tokens = n_full * block + tail
        scores = torch.randn(n_full, generator=gen)  # distinct with probability 1: no ties
        for keep_blocks in range(2, n_full):
            kept = select_kept_indices(scores, n_tokens, block, keep_blocks)

            assert kept.dtype == torch.long
            assert kept.tolist() == expected_kept(scores.tolist(), n_tokens, block, keep_blocks)
            assert kept.numel() == keep_blocks * block + tail
            assert torch.all(kept[1:] > kept[:-1])  # sorted, no repeats


@pytest.mark.parametrize("scores_dtype", [torch.float32, torch.bfloat16])
def test_select_kept_indices_forced_blocks_do_not_cost_extra(scores_dtype):
    """Sink and last block kept whatever their scores; when they are also the best, no extra block slips in."""
    block, n_full, tail = 4, 6, 3
    n = n_full * block + tail
    worst_forced = torch.tensor([-9.0, 5.0, 1.0, 4.0, 2.0, -8.0], dtype=scores_dtype)
    best_forced = torch.tensor([9.0, 5.0, 1.0, 4.0, 2.0, 8.0], dtype=scores_dtype)

    low = select_kept_indices(worst_forced, n, block, 3).tolist()
    high = select_kept_indices(best_forced, n, block, 3).tolist()

    blocks_low = sorted({i // block for i in low if i < n_full * block})
    blocks_high = sorted({i // block for i in high if i < n_full * block})
    assert blocks_low == [0, 1, 5]
    assert blocks_high == [0, 1, 5]
    assert low[-tail:] == high[-tail:] == list(range(n_full * block, n))


def test_select_kept_indices_with_block_to_keep_respects_budget_on_a_partial_last_block():
    gen = torch.Generator().manual_seed(7)
    block, n = 64, 1000  # 15 full blocks and a 40-token tail
    scores = torch.rand(n // block, generator=gen)
    for budget in (128, 200, 512, 999):
        keep = blocks_to_keep(n, block, budget)
        kept = select_kept_indices(scores, n, block, keep)
        assert kept.numel() <= max(budget, 2 * block + n % block)
        assert kept[-(n % block) :].tolist() == list(range(960, 1000))
        assert kept[:block].tolist() == list(range(block))
        assert kept[-(n % block) - block : -(n % block)].tolist() == list(range(896, 960))


def test_select_kept_indices_keeps_forced_blocks_against_non_finite_scores():
    scores = torch.tensor([0.0, 1.0, float("nan"), float("inf"), float("inf"), 2.0])

    kept = select_kept_indices(scores, 6, 1, 3).tolist()

    assert kept[0] == 0 and kept[-1] == 5 and len(kept) == 3
