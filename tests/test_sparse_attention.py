"""Sparse prefill attention (sliminfer/strategies/sparse_attention): ``minference`` and ``flexprefill``.

1. Kernels: the CPU reference computes exactly the selection's (query, key) pairs (against a mask built
   here, block by block, and a hand-written fp32 softmax), equals causal SDPA when every causal block is
   kept, and FlexAttention with the BlockMask made from the block indices (the CUDA path, compiled here
   on the CPU) equals it; every selection holds the sink and the diagonal.
2. Estimators: planted columns, diagonals and block patterns are found; the pattern test tells them
   apart; full budgets give every causal block; a fixed density gives that many blocks.
3. Through the pipeline on a tiny model: dense below ``min_tokens`` (exactly), equal to dense at full
   budget, and, sparse, equal to the stock model run with each layer's selection as its mask; with
   pruning too.
4. Config: every bad field is refused naming ``attention.<field>``; the presets; ``sliminfer plugins``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from sliminfer import ConfigError, SlimPipeline, load_config
from sliminfer.cli.main import main
from sliminfer.core.registry import get_registry
from sliminfer.strategies.sparse_attention.blocks import (
    BlockSelection,
    causal_block_count,
    num_blocks,
)
from sliminfer.strategies.sparse_attention.estimate import (
    FlexPrefillEstimate,
    MInferenceEstimate,
    block_means,
    cover_count,
    cover_mask,
    diagonal_sums,
    last_query_sums,
    pool_distances,
    top_k_mask,
)
from sliminfer.strategies.sparse_attention.kernel import (
    block_sparse_attention,
    flex_block_sparse_attention,
    masked_reference_attention,
)
from sliminfer.strategies.sparse_attention.strategy import (
    FlexPrefillAttention,
    FlexPrefillConfig,
    MInferenceAttention,
    MInferenceConfig,
)
from sliminfer.testing.reference import MaskedReference, layer_mask
from sliminfer.testing.tiny_models import random_prompt, tiny_model

TOL = 1e-5  # fp32, the same pairs summed in another order


def _qkv(n: int, heads: int = 4, kv_heads: int = 2, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, n, d, generator=g), torch.randn(1, kv_heads, n, d, generator=g),
            torch.randn(1, kv_heads, n, d, generator=g))


def _random_selection(n: int, block: int, heads: int = 4, p: float = 0.3, seed: int = 0) -> BlockSelection:
    blocks = num_blocks(n, block)
    keep = torch.rand(1, heads, blocks, blocks, generator=torch.Generator().manual_seed(seed)) < p
    return BlockSelection.from_grid(keep, block, n)


def independent_mask(selection: BlockSelection) -> torch.Tensor:
    """``[b, h, n, n]``: per (batch, head, query block), the keys of the blocks its counts and indices
    list, AND causal (written here without the selection's own expansion)."""
    b, h, _ = selection.counts.shape
    n, size, blocks = selection.seq_len, selection.block_size, selection.num_blocks
    mask = torch.zeros(b, h, n, n, dtype=torch.bool)
    for i in range(b):
        for head in range(h):
            for q_block in range(blocks):
                listed = selection.indices[i, head, q_block, : int(selection.counts[i, head, q_block])]
                keys = torch.zeros(blocks, dtype=torch.bool)
                keys[listed.long()] = True
                mask[i, head, q_block * size : (q_block + 1) * size] = keys.repeat_interleave(size)[:n]
    return mask & torch.ones(n, n, dtype=torch.bool).tril()


def softmax_attention(query, key, value, mask, scale) -> torch.Tensor:
    """Masked attention written out in fp32, grouped heads repeated."""
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1).float(), value.repeat_interleave(group, 1).float()
    scores = (query.float() @ key.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ value


# 1. kernels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,block", [(301, 16), (37, 16), (256, 32), (500, 64)])
def test_reference_computes_exactly_the_selected_pairs(n: int, block: int) -> None:
    query, key, value = _qkv(n)
    selection = _random_selection(n, block)
    expected = softmax_attention(query, key, value, independent_mask(selection), 0.25)
    assert torch.equal(selection.token_mask(), independent_mask(selection))
    assert (masked_reference_attention(query, key, value, selection, 0.25) - expected).abs().max() <= TOL
    assert (block_sparse_attention(query, key, value, selection, 0.25) - expected).abs().max() <= TOL  # CPU path


def test_reference_in_small_chunks_is_the_same(monkeypatch) -> None:
    """The chunking over query blocks (to bound memory) changes nothing: one query block at a time."""
    query, key, value = _qkv(301)
    selection = _random_selection(301, 16)
    whole = masked_reference_attention(query, key, value, selection, 0.25)
    monkeypatch.setattr("sliminfer.strategies.sparse_attention.kernel.REFERENCE_CHUNK_ELEMENTS", 1)
    assert torch.equal(masked_reference_attention(query, key, value, selection, 0.25), whole)


@pytest.mark.parametrize("n,block", [(301, 16), (256, 16), (100, 64)])
def test_every_causal_block_is_causal_sdpa(n: int, block: int) -> None:
    query, key, value = _qkv(n)
    blocks = num_blocks(n, block)
    selection = BlockSelection.from_grid(torch.ones(1, 4, blocks, blocks, dtype=torch.bool), block, n)
    assert selection.density() == 1.0 and selection.counts[0, 0].tolist() == list(range(1, blocks + 1))
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), is_causal=True, scale=0.25)
    assert (block_sparse_attention(query, key, value, selection, 0.25) - sdpa).abs().max() <= 1e-6


def test_sink_and_diagonal_are_always_kept() -> None:
    empty = BlockSelection.from_grid(torch.zeros(1, 2, 5, 5, dtype=torch.bool), 16, 70)
    assert empty.counts.tolist() == [[[1, 2, 2, 2, 2]] * 2]
    assert [empty.indices[0, 0, q, : 1 + (q > 0)].tolist() for q in range(5)] == [[0], [0, 1], [0, 2], [0, 3], [0, 4]]
    # from a token mask that allows only pairs right of the diagonal: still causal, sink and diagonal
    upper = torch.ones(70, 70, dtype=torch.bool).triu(1).expand(1, 2, 70, 70)
    assert torch.equal(BlockSelection.from_mask(upper, 16).grid(), empty.grid())
    assert empty.density() == pytest.approx(9 / causal_block_count(5))


def test_from_mask_keeps_every_block_the_mask_touches() -> None:
    mask = torch.zeros(1, 1, 70, 70, dtype=torch.bool)
    mask[0, 0, 69, 33] = True  # query block 4, key block 2
    grid = BlockSelection.from_mask(mask, 16).grid()[0, 0]
    assert grid[4, 2] and int(grid.sum()) == 9 + 1


@pytest.mark.slow
def test_flex_attention_path_equals_the_reference() -> None:
    """The CUDA path (BlockMask from the block indices: off-diagonal blocks full, the diagonal partial with
    a causal mask_mod; compiled flex_attention), run here by the CPU backend of torch.compile."""
    for n, seed in ((301, 1), (290, 2)):  # partial last blocks of 13 and 2 tokens
        query, key, value = _qkv(n, seed=seed)
        selection = _random_selection(n, 16, seed=seed)
        expected = masked_reference_attention(query, key, value, selection, 0.25)
        assert (flex_block_sparse_attention(query, key, value, selection, 0.25) - expected).abs().max() <= TOL


def test_shapes_that_do_not_fit_are_refused() -> None:
    query, key, value = _qkv(100)
    with pytest.raises(ValueError, match="the selection is for batch/heads"):
        block_sparse_attention(query, key, value, _random_selection(90, 16), 0.25)
    with pytest.raises(ValueError, match="q_heads a multiple of kv_heads"):
        block_sparse_attention(query[:, :3], key, value, _random_selection(100, 16, heads=3), 0.25)
    with pytest.raises(ValueError, match=r"keep: expected \[batch, heads, 7, 7\]"):
        BlockSelection.from_grid(torch.ones(1, 1, 6, 6, dtype=torch.bool), 16, 100)


# 2. estimators ----------------------------------------------------------------------------------------
def test_diagonal_sums_and_distance_pooling_by_hand() -> None:
    attention = torch.rand(2, 3, 5, 13, generator=torch.Generator().manual_seed(0))
    by_hand = torch.zeros(2, 3, 13)
    for i in range(5):  # row i is position 8 + i
        for j in range(8 + i + 1):
            by_hand[..., 8 + i - j] += attention[..., i, j]
    assert (diagonal_sums(attention.tril(8)) - by_hand).abs().max() <= 1e-6
    values = torch.rand(13, generator=torch.Generator().manual_seed(1))
    pooled = torch.zeros(4)
    for offset in range(13):
        d, r = divmod(offset, 4)
        pooled[d] += values[offset] * (4 - r) / 4
        if r and d + 1 < 4:
            pooled[d + 1] += values[offset] * r / 4
    assert (pool_distances(values, 4) - pooled).abs().max() <= 1e-6


@pytest.mark.parametrize("n,last", [(77, 16), (40, 64)])
def test_last_query_sums_by_hand_and_in_chunks(monkeypatch, n: int, last: int) -> None:
    """Each query head attends with its group's key head (4 query heads, 2 key heads), the last queries
    causal among themselves; the same with one key head per chunk (the memory bound) as with all at once."""
    g = torch.Generator().manual_seed(3)
    query, key = torch.randn(2, 4, n, 8, generator=g), torch.randn(2, 2, n, 8, generator=g)
    m = min(last, n)
    vertical, slash = torch.zeros(2, 4, n), torch.zeros(2, 4, n)
    for h in range(4):
        scores = query[:, h, n - m :] @ key[:, h // 2].transpose(-1, -2) * 0.3
        position = torch.arange(n - m, n)[:, None]
        attention = scores.masked_fill(torch.arange(n)[None, :] > position, float("-inf")).softmax(-1)
        vertical[:, h] = attention.sum(-2)
        for i in range(m):
            for j in range(n - m + i + 1):
                slash[:, h, n - m + i - j] += attention[:, i, j]
    got = last_query_sums(query, key, last, 0.3)
    assert (got[0] - vertical).abs().max() <= 1e-5 and (got[1] - slash).abs().max() <= 1e-5
    monkeypatch.setattr("sliminfer.strategies.sparse_attention.estimate.SCORE_CHUNK_BYTES", 1)
    chunked = last_query_sums(query, key, last, 0.3)
    assert torch.equal(chunked[0], got[0]) and torch.equal(chunked[1], got[1])


@pytest.mark.parametrize("n", [64, 70, 5])
def test_block_means_are_the_means_of_each_block(n: int) -> None:
    x = torch.randn(1, 3, n, 4, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    expected = torch.stack([x[:, :, i : i + 16].float().mean(-2) for i in range(0, n, 16)], dim=2)
    got = block_means(x, 16)
    assert got.dtype == torch.float32 and (got - expected).abs().max() <= 1e-6


def test_cover_mask_is_the_top_cover_count_entries() -> None:
    values = torch.rand(3, 50, generator=torch.Generator().manual_seed(5))
    for gamma in (0.3, 0.9, 1.0):
        assert torch.equal(cover_mask(values, gamma), top_k_mask(values, cover_count(values, gamma)))
        assert torch.equal(cover_mask(values, gamma).sum(-1), cover_count(values, gamma))


def planted_column(n: int = 1024, column: int = 700, d: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query shares a direction that one key (``column``) points along: all later queries attend to it."""
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    query = 0.3 * torch.randn(1, 2, n, d, generator=g) + 3 * u
    key = 0.3 * torch.randn(1, 1, n, d, generator=g)
    key[0, 0, column] = 4 * u
    return query, key


def planted_diagonal(n: int = 1024, offset: int = 300, d: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random unit codes per position; the query at ``p`` carries code ``p``, the key at ``j`` code
    ``j + offset``: every query attends to the key ``offset`` before it."""
    g = torch.Generator().manual_seed(1)
    codes = torch.nn.functional.normalize(torch.randn(n + offset, d, generator=g), dim=-1)
    return 6 * codes[:n].expand(1, 2, n, d), 6 * codes[offset : n + offset].expand(1, 1, n, d)


def planted_blocks(n: int = 1024, target: int = 3, first: int = 8, d: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries of blocks ``first..`` (of 64) and every key of block ``target`` share a direction: a
    block pattern that block means capture (FlexPrefill's query-aware case)."""
    g = torch.Generator().manual_seed(2)
    w = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    query = 0.3 * torch.randn(1, 2, n, d, generator=g)
    query[:, :, first * 64 :] += 4 * w
    key = 0.3 * torch.randn(1, 1, n, d, generator=g)
    key[:, :, target * 64 : (target + 1) * 64] += 4 * w
    return query, key


def _grid(keep: torch.Tensor, n: int, block: int = 64) -> torch.Tensor:
    return BlockSelection.from_grid(keep, block, n).grid()


def test_planted_column_is_found() -> None:
    query, key = planted_column()
    grid = _grid(MInferenceEstimate.of(query, key, 1.0, 64, 64).keep(vertical_size=31, slash_size=100), 1024)
    assert grid[..., 10:, 10].all()  # token 700 is in key block 10
    assert not grid[..., 14:, 11].any()  # a neighbouring column is not (past the 100 local diagonals: distance 2)
    flex = FlexPrefillEstimate.of(query, key, 1.0, 64, tau=0.1)
    assert not flex.query_aware.any()  # one token: block means miss it, the pattern test sees that
    grid = _grid(flex.keep(gamma=0.9, min_budget=128), 1024)
    assert grid[..., 10:, 10].all() and grid.float().mean() < 0.5


def test_planted_diagonal_is_found() -> None:
    query, key = planted_diagonal()
    q_blocks = torch.arange(5, 16)
    # offset 300 = 4 blocks of 64 and 44: through distances 4 and 5 of every query block
    grid = _grid(MInferenceEstimate.of(query, key, 1.0, 64, 64).keep(vertical_size=30, slash_size=101), 1024)
    assert grid[..., q_blocks, q_blocks - 4].all() and grid[..., q_blocks, q_blocks - 5].all()
    assert not grid[..., q_blocks[3:], q_blocks[3:] - 7].any()
    flex = FlexPrefillEstimate.of(query, key, 1.0, 64, tau=0.0)  # tau 0: vertical-slash
    grid = _grid(flex.keep(gamma=0.9, min_budget=192), 1024)
    assert grid[..., q_blocks, q_blocks - 4].all() and grid[..., q_blocks, q_blocks - 5].all()
    assert not grid[..., q_blocks[3:], q_blocks[3:] - 7].any()


def test_planted_block_pattern_is_query_aware_and_found() -> None:
    query, key = planted_blocks()
    flex = FlexPrefillEstimate.of(query, key, 1.0, 64, tau=0.1)
    assert flex.query_aware.all()  # the block means estimate the last block's attention well
    grid = _grid(flex.keep(gamma=0.5, min_budget=0), 1024)
    assert grid[..., 8:, 3].all()
    assert grid[..., 8:, 4:].float().mean() < 0.2  # mostly the pattern, the diagonal and the sink
    assert FlexPrefillEstimate.of(query, key, 1.0, 64, tau=0.0).query_aware.sum() == 0


def _flex(**options) -> FlexPrefillAttention:
    return FlexPrefillAttention(FlexPrefillConfig(block_size=16, min_tokens=1, **options))


def _minference(**options) -> MInferenceAttention:
    return MInferenceAttention(MInferenceConfig(block_size=16, min_tokens=1, **options))


@pytest.mark.parametrize("strategy", [
    _flex(gamma=1.0, tau=0.0), _flex(gamma=1.0, tau=1.0), _flex(gamma=0.5, min_budget=10**6, tau=0.0),
    _flex(density=1.0), _minference(vertical_size=400), _minference(slash_size=400), _minference(density=1.0),
], ids=["flex_gamma1_vs", "flex_gamma1_qa", "flex_huge_budget", "flex_density1", "minf_all_columns",
        "minf_all_diagonals", "minf_density1"])
def test_full_budgets_keep_every_causal_block(strategy) -> None:
    query, key, _ = _qkv(400, seed=3)
    selection = strategy.select(query, key, 0.25)
    assert selection.counts[0].tolist() == [list(range(1, 26))] * 4


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5])
@pytest.mark.parametrize("make", [_flex, _minference], ids=["flexprefill", "minference"])
def test_density_override_gives_the_asked_fraction(make, density: float) -> None:
    query, key, _ = _qkv(2048, seed=4)  # 128 blocks of 16: 8256 causal blocks per head
    selection = make(density=density).select(query, key, 0.25)
    assert selection.counts.sum(-1).tolist() == [[round(density * 8256)] * 4]
    assert selection.densities().sub(density).abs().max() <= 0.5 / 8256


def test_density_override_ranks_by_the_estimate() -> None:
    """At 10 % of the causal blocks, the planted column's blocks are among them for both methods."""
    query, key = planted_column(n=4096)
    for strategy in (MInferenceAttention(MInferenceConfig(block_size=64, density=0.1)),
                     FlexPrefillAttention(FlexPrefillConfig(block_size=64, density=0.1, tau=0.0))):
        grid = strategy.select(query, key, 1.0).grid()
        assert grid[..., 10:, 10].all(), type(strategy).__name__


# 3. through the pipeline ------------------------------------------------------------------------------
SPARSE = {
    "minference": {"name": "minference", "block_size": 16, "min_tokens": 64, "vertical_size": 40, "slash_size": 120,
                   "last_queries": 16},
    "flexprefill": {"name": "flexprefill", "block_size": 16, "min_tokens": 64, "gamma": 0.5, "min_budget": 32},
}
PRUNING = {
    "scorer": {"name": "attention_unit", "block_size": 16, "unit_size": 4, "window": 4},
    "schedule": {"name": "fixed", "layers": [2, 4], "budgets": [320, 160]},
}


def _pipe(model, attention: dict | None, pruned: bool = False) -> SlimPipeline:
    config = {"attention": attention} if attention is not None else {}
    if pruned:
        config["pruning"] = PRUNING
    return SlimPipeline.from_pretrained(model, config=config)


def record_selections(pipe: SlimPipeline) -> dict[int, BlockSelection]:
    """Wrap the strategy's ``select``: each selection by layer (layers run in order, one call each)."""
    strategy, layers = pipe.forward.attention, iter(sorted(pipe.forward.attend))
    selections: dict[int, BlockSelection] = {}
    select = strategy.select

    def recording(query, key, scale):
        selections[next(layers)] = selection = select(query, key, scale)
        return selection

    strategy.select = recording
    return selections


class BlockMaskedReference(MaskedReference):
    """The stock model at full length, each layer's mask the kept positions AND, where a selection was
    recorded, that selection's pairs (built by :func:`independent_mask`)."""

    def __init__(self, model, kept_positions, selections: dict[int, BlockSelection]) -> None:
        super().__init__(model, kept_positions)
        self.masks = {layer: independent_mask(s) for layer, s in selections.items()}

    def _before_attention(self, layer, attn, kwargs) -> None:
        super()._before_attention(layer, attn, kwargs)
        if layer in self.masks and not self.seen:
            kept = self.kept[layer]
            assert kept.numel() == self.n_prompt, "a selection was recorded for a pruned layer"
            kwargs["attention_mask"] = kwargs["attention_mask"] & self.masks[layer]


@pytest.mark.parametrize("name", sorted(SPARSE))
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_below_min_tokens_is_the_dense_strategy_exactly(name: str, arch: str, caplog) -> None:
    model = tiny_model(arch, seed=1)
    ids = random_prompt(301, seed=2)
    dense = _pipe(model, {"name": "dense"}).prefill(ids)
    pipe = _pipe(model, {**SPARSE[name], "min_tokens": 302})
    with caplog.at_level(logging.DEBUG, logger="sliminfer.strategies.sparse_attention.strategy"):
        ours = pipe.prefill(ids)
    assert torch.equal(ours.logits, dense.logits)
    strategy = pipe.forward.attention
    assert sorted(strategy.densities) == list(range(6)) and strategy.last_density == 1.0
    assert all(torch.equal(d, torch.ones(1, 4)) for d in strategy.densities.values())
    assert "layer 0: 301 tokens < min_tokens 302: dense attention" in caplog.text


@pytest.mark.parametrize("attention", [
    {**SPARSE["flexprefill"], "gamma": 1.0}, {**SPARSE["flexprefill"], "density": 1.0},
    {**SPARSE["minference"], "vertical_size": 600}, {**SPARSE["minference"], "density": 1.0},
], ids=["flex_gamma1", "flex_density1", "minf_all_columns", "minf_density1"])
def test_full_budget_equals_dense(attention: dict) -> None:
    model = tiny_model("qwen3", seed=3)
    ids = random_prompt(301, seed=4)
    pipe = _pipe(model, attention)
    ours = pipe.prefill(ids)
    assert pipe.forward.attention.last_density == 1.0
    assert (ours.logits - _pipe(model, {"name": "dense"}).prefill(ids).logits).abs().max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPARSE))
@pytest.mark.parametrize("arch,n", [("llama", 1200), ("qwen3", 1033)])
def test_sparse_prefill_equals_the_stock_model_masked_by_its_selection(name: str, arch: str, n: int) -> None:
    model = tiny_model(arch, seed=5)
    ids = random_prompt(n, seed=6)
    pipe = _pipe(model, SPARSE[name])
    selections = record_selections(pipe)
    ours = pipe.prefill(ids)
    assert sorted(selections) == list(range(6))
    densities = [s.density() for s in selections.values()]
    assert max(densities) < 0.75, densities  # sparse, so the comparison below means something
    assert pipe.forward.attention.last_density == pytest.approx(densities[-1])
    reference = BlockMaskedReference(model, ours.kept_positions, selections).prefill(ids)
    assert (ours.logits - reference).abs().max() <= 1e-4
    dense = _pipe(model, None).prefill(ids).logits
    assert (ours.logits - dense).abs().max() > 1e-3  # the sparsity changed the result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPARSE))
def test_composes_with_pruning(name: str) -> None:
    """The default-preset-like pruning (attention_unit scorer, fixed schedule) with the strategy on the
    layers that see the whole prompt (null: 0..2, the first pruning layer included)."""
    model = tiny_model("llama", seed=7)
    ids = random_prompt(1200, seed=8)
    pipe = _pipe(model, SPARSE[name], pruned=True)
    selections = record_selections(pipe)
    ours = pipe.prefill(ids)
    assert sorted(selections) == [0, 1, 2] and all(s.density() < 0.75 for s in selections.values())
    assert ours.tokens_per_layer[3] == 320 and ours.tokens_per_layer[5] == 160
    reference = BlockMaskedReference(model, ours.kept_positions, selections)
    assert (ours.logits - reference.prefill(ids)).abs().max() <= 1e-4


def test_layer_mask_helper_is_what_the_reference_combines_with() -> None:
    """The reference ANDs its selection mask with MaskedReference's boolean kept-and-causal mask."""
    mask = layer_mask(torch.arange(5), 5, torch.arange(5), 5)
    assert mask.dtype == torch.bool and torch.equal(mask[0, 0], torch.ones(5, 5, dtype=torch.bool).tril())


# 4. config, presets, listing -------------------------------------------------------------------------
BAD_FIELDS = [
    ("flexprefill", "gamma", 0.0, "greater than 0"),
    ("flexprefill", "gamma", 1.5, "less than or equal to 1"),
    ("flexprefill", "gamma", True, "not a boolean"),
    ("flexprefill", "tau", -0.1, "greater than or equal to 0"),
    ("flexprefill", "tau", 2.0, "less than or equal to 1"),
    ("flexprefill", "min_budget", -1, "greater than or equal to 0"),
    ("flexprefill", "min_budget", 64.5, "valid integer"),
    ("flexprefill", "block_size", 0, "greater than or equal to 16"),
    ("flexprefill", "block_size", 40, "multiple of 16"),
    ("flexprefill", "min_tokens", 0, "greater than or equal to 1"),
    ("flexprefill", "density", 0.0, "greater than 0"),
    ("flexprefill", "density", 1.2, "less than or equal to 1"),
    ("flexprefill", "density", "0.1", "valid number"),
    ("flexprefill", "window", 4, "unknown key"),
    ("minference", "vertical_size", 0, "greater than or equal to 1"),
    ("minference", "slash_size", -5, "greater than or equal to 1"),
    ("minference", "last_queries", 0, "greater than or equal to 1"),
    ("minference", "block_size", 100, "multiple of 16"),
    ("minference", "density", math.inf, "finite number"),
    ("minference", "gamma", 0.9, "unknown key"),
]


@pytest.mark.parametrize("name,field,value,says", BAD_FIELDS, ids=lambda v: str(v))
def test_bad_field_is_refused_naming_it(name: str, field: str, value, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"attention": {"name": name, field: value}})
    assert info.value.field == f"attention.{field}" and says in str(info.value)


@pytest.mark.parametrize("name", ["flexprefill", "minference"])
def test_preset_is_the_pruning_preset_plus_an_attention_section(name: str) -> None:
    preset, base = load_config(f"llama-3.1-8b-{name}"), load_config("llama-3.1-8b")
    assert preset.attention.name == name and preset.attention.layers is None
    assert preset.model_copy(update={"attention": None}) == base
    defaults = {"flexprefill": FlexPrefillConfig, "minference": MInferenceConfig}[name]()
    assert get_registry().options("attention", preset.attention, "attention") == defaults  # written out


@pytest.mark.parametrize("name", ["flexprefill", "minference"])
def test_eval_configs_are_the_default_model_with_the_method(name: str) -> None:
    """Alone and on top of the smollm2-135m preset (whose model section they share, as the eval needs),
    each engaging from 1024 tokens."""
    root = Path(__file__).resolve().parent.parent / "eval" / "configs"
    alone = load_config(root / f"smollm2-135m-{name}.yaml")
    pruned = load_config(root / f"smollm2-135m-pruned-{name}.yaml")
    preset = load_config("smollm2-135m")
    assert alone.pruning is None and alone.model == preset.model
    assert pruned.model_copy(update={"attention": None}) == preset
    for config in (alone, pruned):
        assert config.attention.name == name and config.attention.options["min_tokens"] == 1024
    assert pruned.attention.options == alone.attention.options


def test_plugins_lists_both(capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    attentions = out.split("attentions:\n")[1]
    for name in ("dense", "flexprefill", "minference"):
        assert f"  {name} " in attentions
    assert "gamma" in attentions and "vertical_size" in attentions


def test_flex_kernel_options_add_tma_on_hopper_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """TMA loads are asked for on compute capability 9.x with contiguous inputs only (torch: experimental,
    Hopper-only; strided inputs: pytorch#170813); every device keeps ROWS_GUARANTEED_SAFE (each row keeps
    its causal diagonal block)."""
    from sliminfer.strategies.sparse_attention import kernel

    class FakeCuda:  # what flex_kernel_options reads of a tensor, on a "cuda" device without a GPU here
        def __init__(self, contiguous: bool, tokens: int = 256) -> None:
            self.device, self.contiguous, self.shape = torch.device("cuda"), contiguous, (1, 8, tokens, 64)

        def is_contiguous(self) -> bool:
            return self.contiguous

    cpu = torch.zeros(1, 2, 3, 4)
    assert kernel.flex_kernel_options(cpu, cpu, cpu, 128) == {"ROWS_GUARANTEED_SAFE": True}
    for capability, contiguous, tma in (((9, 0), True, True), ((9, 0), False, False), ((8, 0), True, False),
                                        ((10, 0), True, False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        tensors = [FakeCuda(True), FakeCuda(contiguous), FakeCuda(True)]
        options = kernel.flex_kernel_options(*tensors, 128)  # type: ignore[arg-type]
        assert options["ROWS_GUARANTEED_SAFE"] is True and options.get("USE_TMA", False) is tma


def test_flex_kernel_options_say_whether_the_lengths_need_bounds_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """IS_DIVISIBLE from the real lengths (a kernel made dynamic by a second length no longer knows them, and
    would check every load of a 32k prompt): True only when queries and keys are both multiples of 128 and of
    the block mask's block (a last block reaching past the end would have its tiles read unchecked)."""
    from sliminfer.strategies.sparse_attention import kernel

    class FakeCuda:
        def __init__(self, tokens: int) -> None:
            self.device, self.shape = torch.device("cuda"), (1, 8, tokens, 64)

        def is_contiguous(self) -> bool:
            return False

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    for q, kv, block, divisible in ((32768, 32768, 128, True), (256, 384, 128, True), (32768, 32700, 128, False),
                                    (300, 32768, 128, False), (384, 384, 256, False), (512, 512, 256, True),
                                    (256, 256, 64, True), (192, 192, 64, False)):
        options = kernel.flex_kernel_options(FakeCuda(q), FakeCuda(kv), FakeCuda(kv), block)  # type: ignore[arg-type]
        assert options["IS_DIVISIBLE"] is divisible, (q, kv, block)
    assert kernel.FLEX_KERNEL_OPTIONS == {"ROWS_GUARANTEED_SAFE": True}  # the returned dict is a copy
