"""The peer methods (docs/peers.md) as registered strategies: LazyLLM, FastKV, SnapKV and GemFilter.

1. LazyLLM (``last_token`` + ``ratio``) and FastKV (``snapkv`` + a one-layer ``fixed``) prefills equal the
   masked full-length reference (prefill logits, every layer's KV, greedy decode) given the kept tokens,
   and their first selection is an independent top-k of the stock model's own attention
   (``output_attentions``).
2. The ``snapkv`` and ``last_token`` scores equal a straightforward per-head loop; snapkv works with the
   fixed and ratio schedules (kept sets as the scoring reference chooses them).
3. GemFilter: the second pass is the UNMODIFIED stock model run on the kept ids (positions 0..m-1), logits
   exact; the kept ids are an independent top-k of the last query row at the filter layer (its softmax
   attention from ``output_attentions``, and the authors' pooled raw q.k from hooks); decoding continues
   at position m; composed with pruning, the second pass equals the masked reference on the kept ids.
4. Bad values raise a ConfigError naming the field, before any forward pass; the shipped presets fit their
   models' layer counts and are refused by models too shallow for them.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from sliminfer import ConfigError, SlimPipeline, load_config
from sliminfer.bench.shapes import shape_config
from sliminfer.core.config import StrategySpec
from sliminfer.core.preflight import check_config_fits_checkpoint
from sliminfer.core.registry import get_registry
from sliminfer.decode.run import static_generate
from sliminfer.strategies.block_selection import (
    blocks_to_keep,
    select_kept_indices,
    window_blocks,
)
from sliminfer.strategies.last_token import LastTokenConfig, LastTokenScorer
from sliminfer.strategies.snapkv import SnapKVConfig, SnapKVScorer
from sliminfer.testing.reference import (
    MaskedReference,
    ScoringReference,
    greedy_decode_both,
    pipeline_greedy,
    stock_queries,
)
from sliminfer.testing.tiny_models import random_prompt, tiny_model

N = 301  # prompt tokens
LAZYLLM = {"scorer": {"name": "last_token", "block_size": 1},
           "schedule": {"name": "ratio", "layers": [1, 3], "ratios": [0.5, 0.5], "block_size": 1},
           "prune_point": "after_layer"}
FASTKV = {"scorer": {"name": "snapkv", "window": 8, "kernel_size": 7, "pooling": "max"},
          "schedule": {"name": "fixed", "layers": [2], "budgets": [96]},
          "prune_point": "after_layer"}


def _prefill_equals_reference(model: torch.nn.Module, config: dict, ids: torch.Tensor) -> SlimPipeline:
    """The pipeline's prefill equals the masked reference given its kept positions: logits, every layer's
    keys and values of the tokens it kept, and 8 greedy decode steps. Returns the pipeline."""
    pipe = SlimPipeline.from_pretrained(model, config=config)
    result = pipe.prefill(ids, reserve_tokens=8)
    assert result.tokens_per_layer[-1] < ids.shape[1], result.tokens_per_layer  # it pruned
    ref = MaskedReference(model, result.kept_positions)
    assert (result.logits - ref.prefill(ids)).abs().max().item() <= 1e-4
    for layer, kept in enumerate(result.kept_positions):
        stock = ref.cache.layers[layer]
        assert torch.allclose(result.cache.layer_keys(layer), stock.keys[:, :, kept], atol=1e-5), layer
        assert torch.allclose(result.cache.layer_values(layer), stock.values[:, :, kept], atol=1e-5), layer
    ours, theirs, gap = greedy_decode_both(pipe, ref, result, steps=8)
    assert ours == theirs and gap <= 1e-4
    return pipe


def _stock_attentions(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every layer's softmax attention ``[1, heads, n, n]`` from the stock model (eager attention)."""
    with torch.inference_mode():
        return model(ids, output_attentions=True).attentions


def _expected_kept(scores: torch.Tensor, budget: int, window: int) -> list[int]:
    """Token 0 and the last ``window`` tokens, plus the best of the rest up to ``budget`` tokens, ascending."""
    n = scores.numel()
    middle = scores[1 : n - window].topk(budget - 1 - window).indices + 1
    return sorted({0, *range(n - window, n), *middle.tolist()})


# 1. LazyLLM and FastKV equal the masked reference ---------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("point", ["after_layer", "after_attention"])
@pytest.mark.parametrize("peer", [LAZYLLM, FASTKV], ids=["lazyllm", "fastkv"])
def test_peer_prefill_equals_the_masked_reference(arch: str, point: str, peer: dict) -> None:
    model = tiny_model(arch, seed=1)
    _prefill_equals_reference(model, {"pruning": {**peer, "prune_point": point}}, random_prompt(N, seed=4))


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_lazyllm_keeps_the_top_half_by_the_last_tokens_mean_attention(arch: str) -> None:
    """After layer 1 it keeps token 0, the last token and the best of the rest by the stock model's
    attention from the last token at layer 1, averaged over heads: half of the 301 tokens."""
    model = tiny_model(arch, seed=2, attention="eager")
    ids = random_prompt(N, seed=5)
    result = SlimPipeline.from_pretrained(model, config={"pruning": LAZYLLM}).prefill(ids)
    scores = _stock_attentions(model, ids)[1][0, :, -1, :].mean(dim=0)
    assert result.kept_positions[2].tolist() == _expected_kept(scores, N // 2, window=1)
    assert result.tokens_per_layer == [N, N, N // 2, N // 2, N // 4, N // 4]


def _max_pool(values: torch.Tensor, kernel: int) -> torch.Tensor:
    """Each value replaced by the largest within ``kernel // 2`` places of it (a loop, not max_pool1d)."""
    half = kernel // 2
    return torch.stack([values[max(0, i - half) : i + half + 1].max() for i in range(values.numel())])


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_fastkv_keeps_the_window_and_the_top_tokens_by_pooled_window_votes(arch: str) -> None:
    """After layer 2 it keeps token 0, the 8-token window and the best of the rest by the stock model's
    attention from the last 8 queries at layer 2, summed over them, max-pooled (kernel 7) before the
    window, averaged over heads: 96 tokens in all."""
    model = tiny_model(arch, seed=3, attention="eager")
    ids = random_prompt(N, seed=6)
    result = SlimPipeline.from_pretrained(model, config={"pruning": FASTKV}).prefill(ids)
    votes = _stock_attentions(model, ids)[2][0, :, -8:, :].sum(dim=1)  # [heads, n]
    pooled = torch.stack([torch.cat([_max_pool(v[:-8], 7), v[-8:]]) for v in votes]).mean(dim=0)
    assert result.kept_positions[3].tolist() == _expected_kept(pooled, 96, window=8)
    assert result.tokens_per_layer == [N, N, N, 96, 96, 96]


# 2. the scorers' math -----------------------------------------------------------------------------
def _snapkv_by_loops(queries: torch.Tensor, keys: torch.Tensor, kernel: int, pooling: str) -> torch.Tensor:
    """SnapKV's votes written out head by head and query by query, averaged over heads: ``[n]``."""
    q_heads, window, head_dim = queries.shape[1:]
    n, group = keys.shape[2], q_heads // keys.shape[1]
    half, per_head = kernel // 2, []
    for h in range(q_heads):
        k = keys[0, h // group]
        votes = torch.zeros(n)
        for j in range(window):
            seen = n - window + j + 1
            votes[:seen] += torch.softmax(queries[0, h, j] @ k[:seen].T / math.sqrt(head_dim), dim=-1)
        before = votes[: n - window]
        if pooling == "max":
            pooled = _max_pool(before, kernel)
        else:  # the average counts the zero padding, as avg_pool1d does
            pooled = torch.stack([before[max(0, i - half) : i + half + 1].sum() / kernel for i in range(n - window)])
        per_head.append(torch.cat([pooled, votes[n - window :]]))
    return torch.stack(per_head).mean(dim=0)


@pytest.mark.parametrize("window, kernel, pooling", [(8, 7, "max"), (5, 3, "avg"), (1, 1, "max"), (32, 5, "avg")])
@pytest.mark.parametrize("heads", [(4, 2), (6, 6)])
def test_snapkv_scores_equal_a_straightforward_computation(window: int, kernel: int, pooling: str,
                                                           heads: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(window + kernel)
    queries = torch.randn(1, heads[0], window, 16, generator=gen) * 2
    keys = torch.randn(1, heads[1], 90, 16, generator=gen) * 2
    scorer = SnapKVScorer(SnapKVConfig(window=window, kernel_size=kernel, pooling=pooling))
    scores = scorer.score_blocks(queries, keys)
    assert scores.shape == (1, 90)
    assert torch.allclose(scores[0], _snapkv_by_loops(queries, keys, kernel, pooling), atol=1e-6)


@pytest.mark.parametrize("block", [1, 4])
def test_last_token_scores_are_the_last_querys_mean_attention(block: int) -> None:
    gen = torch.Generator().manual_seed(block)
    queries, keys = torch.randn(1, 4, 1, 16, generator=gen), torch.randn(1, 2, 64, 16, generator=gen)
    attention = torch.stack([torch.softmax(queries[0, h, 0] @ keys[0, h // 2].T / 4.0, dim=-1) for h in range(4)])
    want = attention.mean(dim=0).reshape(-1, block).sum(dim=-1)
    scores = LastTokenScorer(LastTokenConfig(block_size=block)).score_blocks(queries, keys)
    assert torch.allclose(scores[0], want, atol=1e-6)


@pytest.mark.parametrize("schedule", [
    {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]},
    {"name": "ratio", "layers": [0, 2], "ratios": [0.6, 0.5], "block_size": 1},
], ids=["fixed", "ratio"])
def test_snapkv_works_with_the_fixed_and_ratio_schedules(schedule: dict) -> None:
    """The pipeline keeps, at every layer, what the scoring reference (stock q/k, fresh scorer) keeps."""
    model = tiny_model("qwen3", seed=4)
    ids = random_prompt(N, seed=7)
    pruning = {"scorer": {"name": "snapkv", "window": 6, "kernel_size": 5, "pooling": "avg"}, "schedule": schedule}
    pipe = _prefill_equals_reference(model, {"pruning": pruning}, ids)
    result = pipe.prefill(ids)
    registry = get_registry()
    config = load_config({"pruning": pruning})
    ref = ScoringReference(model, N, registry.build("scorer", config.pruning.scorer, "pruning.scorer"),
                           registry.build("schedule", config.pruning.schedule, "pruning.schedule"))
    ref.prefill(ids)
    assert [k.tolist() for k in result.kept_positions] == [k.tolist() for k in ref.kept]
    assert all(k[-6:].tolist() == list(range(N - 6, N)) for k in result.kept_positions)  # the window survives


def test_window_blocks_are_kept_whatever_the_scores() -> None:
    """With single-token blocks and a window of 8 the last 8 tokens are kept even when they score lowest,
    and the budget cannot go below the sink and the window."""
    scores = torch.cat([torch.ones(40), torch.zeros(8)])
    kept = select_kept_indices(scores, 48, 1, 20, window=8).tolist()
    assert kept[:1] == [0] and kept[-8:] == list(range(40, 48)) and len(kept) == 20
    assert blocks_to_keep(48, 1, 4, window=8) == 9 and blocks_to_keep(9, 1, 4, window=8) is None
    # blocks holding a window token: the tail holds 40 of 1000 tokens in blocks of 64
    assert [window_blocks(1000, 64, w) for w in (1, 4, 40, 41, 104, 105)] == [1, 1, 1, 1, 1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_a_window_inside_the_last_block_and_tail_changes_no_selection(seed: int) -> None:
    """SlimInfer's settings (a window no longer than the last block) keep exactly what they kept before
    the window rule: the sink, the last full block, the tail and the best of the rest."""
    gen = torch.Generator().manual_seed(seed)
    for block, window in ((64, 4), (16, 4), (16, 16), (8, 1)):
        n = int(torch.randint(6 * block, 40 * block, (1,), generator=gen))
        scores = torch.randn(n // block, generator=gen)
        keep = blocks_to_keep(n, block, n // 2, window=window)
        assert keep == blocks_to_keep(n, block, n // 2)
        assert torch.equal(select_kept_indices(scores, n, block, keep, window=window),
                           select_kept_indices(scores, n, block, keep))


# 3. GemFilter ---------------------------------------------------------------------------------------
def _gemfilter(layer: int = 2, tokens: int = 120, **options) -> dict:
    return {"prompt_filter": {"name": "gemfilter", "layer": layer, "tokens": tokens, **options}}


def _stock_dot_scores(model: torch.nn.Module, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The last query's raw q.k at ``layer`` summed over heads, from the stock model's own modules (a
    hook takes the layer attention's input; queries and keys are derived from its projections)."""
    attn = model.model.layers[layer].self_attn
    seen = {}

    def grab(module, args, kwargs):
        seen.update(kwargs)

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.inference_mode():
        try:
            model(ids)
        finally:
            handle.remove()
        hidden, (cos, sin) = seen["hidden_states"], seen["position_embeddings"]
        q = stock_queries(attn, hidden, (cos, sin))[:, :, -1]  # [1, heads, d]
        k = attn.k_proj(hidden).view(1, hidden.shape[1], -1, attn.head_dim)
        if hasattr(attn, "k_norm"):
            k = attn.k_norm(k)
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        k = rope(k.transpose(1, 2), k.transpose(1, 2), cos, sin)[1]
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # each query head's KV head
        return torch.einsum("bhd,bhnd->bhn", q, k)[0].sum(dim=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_gemfilter_second_pass_is_the_stock_model_on_the_kept_ids(arch: str, backend: str) -> None:
    model = tiny_model(arch, seed=5, attention=backend)
    ids = random_prompt(N, seed=8)
    pipe = SlimPipeline.from_pretrained(model, config=_gemfilter())
    result = pipe.prefill(ids)
    kept = result.filtered.kept
    assert kept.numel() == 120 and result.tokens_per_layer == [120] * 6 and result.prompt_tokens == N
    with torch.inference_mode():
        stock = model(ids[:, kept], use_cache=True, logits_to_keep=1)
    assert torch.equal(result.logits, stock.logits[:, -1])
    for layer in range(6):  # its KV is the stock cache's of the kept ids at positions 0..119
        assert torch.equal(result.cache.layer_keys(layer), stock.past_key_values.layers[layer].keys), layer
        assert torch.equal(result.cache.layer_values(layer), stock.past_key_values.layers[layer].values), layer



@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_gemfilter_decode_continues_at_the_kept_count(arch: str, monkeypatch) -> None:
    """Generated tokens take positions m, m + 1, ... (not the prompt's length): the eager and the static
    decode give ``model.generate``'s tokens and logits on the kept ids alone."""
    model = tiny_model(arch, seed=5)
    ids = random_prompt(N, seed=8)
    pipe = SlimPipeline.from_pretrained(model, config=_gemfilter())
    kept = pipe.prefill(ids).filtered.kept
    with torch.inference_mode():
        want = model.generate(ids[:, kept], do_sample=False, max_new_tokens=8, min_new_tokens=8,
                              output_logits=True, return_dict_in_generate=True)
    positions, step = [], pipe.forward.decode_step
    monkeypatch.setattr(pipe.forward, "decode_step",
                        lambda token, position, cache: positions.append(position) or step(token, position, cache))
    assert pipe.generate(ids, max_new_tokens=8).token_ids == want.sequences[0, 120:].tolist()
    assert positions == list(range(120, 127))
    _, logits = pipeline_greedy(pipe, pipe.prefill(ids, reserve_tokens=8), 7)
    assert max((a - b).abs().max().item() for a, b in zip(logits, want.logits)) <= 1e-5
    static = static_generate(pipe, ids, 8, options={"graph": False, "compile": False})
    assert static.token_ids == want.sequences[0, 120:].tolist()
    assert (static.decoder.logits - want.logits[-1]).abs().max().item() <= 1e-4  # its last step's


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("layer", [0, 3, 5])
def test_gemfilter_keeps_the_top_tokens_by_the_last_rows_attention(arch: str, layer: int) -> None:
    model = tiny_model(arch, seed=6, attention="eager")
    ids = random_prompt(N, seed=9)
    result = SlimPipeline.from_pretrained(model, config=_gemfilter(layer, 100, score="attention",
                                                                   kernel_size=1)).prefill(ids)
    scores = _stock_attentions(model, ids)[layer][0, :, -1, :].sum(dim=0)
    assert result.filtered.kept.tolist() == sorted(scores.topk(100).indices.tolist())
    assert result.filtered.layer == layer


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_gemfilter_default_score_is_the_authors_pooled_dot_product(arch: str) -> None:
    model = tiny_model(arch, seed=7)
    ids = random_prompt(N, seed=10)
    result = SlimPipeline.from_pretrained(model, config=_gemfilter(2, 100)).prefill(ids)
    pooled = F.avg_pool1d(_stock_dot_scores(model, ids, 2)[None, None], 5, stride=1, padding=2)[0, 0]
    assert result.filtered.kept.tolist() == sorted(pooled.topk(100).indices.tolist())


def test_gemfilter_leaves_a_short_prompt_alone() -> None:
    """A prompt of at most ``tokens`` tokens runs once, unfiltered: what the pipeline without the filter gives."""
    model = tiny_model("llama", seed=8)
    ids = random_prompt(120, seed=11)
    filtered = SlimPipeline.from_pretrained(model, config=_gemfilter(2, 120)).prefill(ids)
    plain = SlimPipeline.from_pretrained(model, config={}).prefill(ids)
    assert filtered.filtered is None and torch.equal(filtered.logits, plain.logits)
    assert filtered.tokens_per_layer == [120] * 6


def test_gemfilter_then_pruning_is_the_masked_reference_on_the_kept_ids() -> None:
    """Pruning applies to the second pass: it equals the masked reference run on the kept ids, with the
    kept positions expressed in them."""
    model = tiny_model("qwen3", seed=9)
    ids = random_prompt(N, seed=12)
    config = {**_gemfilter(2, 200), "pruning": {
        "scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
        "schedule": {"name": "fixed", "layers": [3], "budgets": [96]}}}
    pipe = SlimPipeline.from_pretrained(model, config=config)
    result = pipe.prefill(ids, reserve_tokens=8)
    kept = result.filtered.kept
    assert result.tokens_per_layer[0] == 200 and result.tokens_per_layer[-1] < 200
    assert all(set(k.tolist()) <= set(kept.tolist()) for k in result.kept_positions)
    ref = MaskedReference(model, [torch.searchsorted(kept, k) for k in result.kept_positions])
    assert (result.logits - ref.prefill(ids[:, kept])).abs().max().item() <= 1e-4
    ours, theirs, gap = greedy_decode_both(pipe, ref, result, steps=8)
    assert ours == theirs and gap <= 1e-4


# 4. bad values, presets -----------------------------------------------------------------------------
@pytest.mark.parametrize("section, field, value", [
    ({"pruning": {"scorer": {"name": "snapkv", "block_size": 4}, "schedule": FASTKV["schedule"]}},
     "pruning.scorer.block_size", 4),
    ({"pruning": {"scorer": {"name": "snapkv", "kernel_size": 4}, "schedule": FASTKV["schedule"]}},
     "pruning.scorer.kernel_size", 4),
    ({"pruning": {"scorer": {"name": "snapkv", "kernel_size": 0}, "schedule": FASTKV["schedule"]}},
     "pruning.scorer.kernel_size", 0),
    ({"pruning": {"scorer": {"name": "snapkv", "pooling": "median"}, "schedule": FASTKV["schedule"]}},
     "pruning.scorer.pooling", "median"),
    ({"pruning": {"scorer": {"name": "snapkv", "window": 0}, "schedule": FASTKV["schedule"]}},
     "pruning.scorer.window", 0),
    ({"pruning": {"scorer": {"name": "last_token", "window": 4}, "schedule": LAZYLLM["schedule"]}},
     "pruning.scorer.window", 4),
    ({"pruning": {"scorer": {"name": "last_token", "block_size": 0}, "schedule": LAZYLLM["schedule"]}},
     "pruning.scorer.block_size", 0),
    ({"pruning": {"scorer": {"name": "last_token"}, "schedule": {**LAZYLLM["schedule"], "block_size": 64}}},
     "pruning.schedule.block_size", 64),
    (_gemfilter(layer=-1), "prompt_filter.layer", -1),
    (_gemfilter(tokens=0), "prompt_filter.tokens", 0),
    (_gemfilter(tokens=1.5), "prompt_filter.tokens", 1.5),
    (_gemfilter(score="softmax"), "prompt_filter.score", "softmax"),
    (_gemfilter(kernel_size=2), "prompt_filter.kernel_size", 2),
    (_gemfilter(window=4), "prompt_filter.window", 4),
])
def test_bad_values_name_the_field(section: dict, field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(section)
    assert (info.value.field, info.value.value) == (field, value), str(info.value)


def test_an_unknown_prompt_filter_is_named() -> None:
    with pytest.raises(Exception, match=r"prompt_filter.name: unknown prompt_filter 'gemfiltr'.*Did you mean 'gemfilter'"):
        load_config({"prompt_filter": "gemfiltr"})


@pytest.mark.parametrize("config, field, value", [
    (_gemfilter(layer=6), "prompt_filter.layer", 6),
    ({"pruning": {**FASTKV, "schedule": {"name": "fixed", "layers": [6], "budgets": [96]}}},
     "pruning.schedule.layers", 6),
])
def test_layers_past_the_model_are_refused_before_any_forward(config: dict, field: str, value: int,
                                                             monkeypatch, tmp_path) -> None:
    model = tiny_model("llama")
    monkeypatch.setattr(model, "forward", lambda *a, **k: pytest.fail("a forward pass ran"))
    with pytest.raises(ConfigError) as info:
        SlimPipeline.from_pretrained(model, config=config)
    assert (info.value.field, info.value.value) == (field, value)
    assert "0..5" in str(info.value)
    model.config.save_pretrained(tmp_path)  # from config.json alone, before any weight is read
    with pytest.raises(ConfigError) as info:
        SlimPipeline.from_pretrained(tmp_path, config={**config, "model": {"device": "cpu"}})
    assert (info.value.field, info.value.value) == (field, value)


PEERS = ("lazyllm", "fastkv", "gemfilter")


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("model, layers", [("llama-3.1-8b", 32), ("smollm2-135m", 30)])
def test_peer_presets_fit_their_models_and_not_shallower_ones(peer: str, model: str, layers: int) -> None:
    config = load_config(f"{model}-{peer}")
    registry = get_registry()
    hf_config = shape_config(model)
    assert hf_config.num_hidden_layers == layers
    check_config_fits_checkpoint(config, registry, hf_config)
    hf_config.num_hidden_layers = 12  # shallower than every peer preset's deepest layer
    with pytest.raises(ConfigError, match=r"(prompt_filter\.layer|pruning\.schedule\.layers): got \d+; must be a "
                                          r"layer index in 0\.\.11"):
        check_config_fits_checkpoint(config, registry, hf_config)


def test_peer_presets_say_what_they_run() -> None:
    """LazyLLM: last_token with ratio after each layer; FastKV: snapkv w8/k7/max at one layer; GemFilter:
    a prompt filter and no pruning; the SmolLM2 presets sit at the same depths."""
    lazy, fast, gem = (load_config(f"llama-3.1-8b-{peer}") for peer in PEERS)
    assert (lazy.pruning.scorer.name, lazy.pruning.schedule.name, lazy.pruning.prune_point) == (
        "last_token", "ratio", "after_layer")
    assert fast.pruning.schedule.options == {"layers": [15], "budgets": [2048]}
    assert fast.pruning.scorer == StrategySpec(name="snapkv", options={
        "block_size": 1, "window": 8, "kernel_size": 7, "pooling": "max"})
    assert gem.pruning is None and gem.prompt_filter.options["layer"] == 13 and gem.prompt_filter.options["tokens"] == 1024
    small = [load_config(f"smollm2-135m-{peer}") for peer in PEERS]
    assert small[0].pruning.schedule.options["layers"] == [7, 14, 22]
    assert small[1].pruning.schedule.options == {"layers": [14], "budgets": [512]}
    assert (small[2].prompt_filter.options["layer"], small[2].prompt_filter.options["tokens"]) == (12, 256)


def test_gemfilter_with_the_offload_manager_decodes_from_position_m(monkeypatch) -> None:
    """The offload manager's own static decode (eager steps, then its decoder) continues at position m too:
    with a decode budget that keeps every kept block active it gives the stock model's tokens on the kept ids."""
    model = tiny_model("qwen3", seed=5)
    ids = random_prompt(N, seed=8)
    cache = {"name": "offload", "block_size": 16, "unit_size": 4, "decode_budget": 128, "recent_window": 2}
    pipe = SlimPipeline.from_pretrained(model, config={**_gemfilter(), "cache": cache})
    kept = pipe.prefill(ids).filtered.kept
    with torch.inference_mode():
        want = model.generate(ids[:, kept], do_sample=False, max_new_tokens=12, min_new_tokens=12)
    positions, step = [], pipe.forward.decode_step
    monkeypatch.setattr(pipe.forward, "decode_step",
                        lambda token, position, cache: positions.append(position) or step(token, position, cache))
    assert pipe.generate(ids, max_new_tokens=12, fast=True).token_ids == want[0, 120:].tolist()
    assert positions == [120, 121]  # the eager steps before the offload decoder takes over


# 5. tensor parallelism: the ranks combine their heads -------------------------------------------------
TP_CONFIGS = {
    "lazyllm": {"pruning": LAZYLLM},
    "fastkv": {"pruning": FASTKV},
    "gemfilter-dot": _gemfilter(3, 100),
    "gemfilter-attention": _gemfilter(3, 100, score="attention", kernel_size=1),
}


def _tp_worker(rank: int, model_dir: str, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist
    from transformers import AutoModelForCausalLM
    from transformers.distributed import DistributedConfig

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                     distributed_config=DistributedConfig(tp_size=2)).eval()
        model.config._attn_implementation = "sdpa"
        for name, config in TP_CONFIGS.items():
            pipe = SlimPipeline.from_pretrained(model, config=config)
            assert pipe.adapter.head_shards is not None and pipe.adapter.head_shards.local_q_heads == 2
            result = pipe.prefill(random_prompt(N, seed=13))
            torch.save({"kept": result.kept_positions, "logits": result.logits}, f"{out_dir}/{name}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_tensor_parallel_ranks_keep_what_one_process_keeps(tmp_path) -> None:
    """Two gloo processes with transformers' TP plan (each holds half of the heads) keep, at every layer,
    exactly the tokens one process keeps, so the scorers' and the filter's head means span both ranks."""
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is needed")
    model = tiny_model("qwen3", seed=3)
    model.save_pretrained(tmp_path / "model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_tp_worker, args=(str(tmp_path / "model"), port, str(tmp_path)), nprocs=2, join=True)
    for name, config in TP_CONFIGS.items():
        one = SlimPipeline.from_pretrained(model, config=config).prefill(random_prompt(N, seed=13))
        assert one.tokens_per_layer[-1] < N, name
        for rank in range(2):
            got = torch.load(tmp_path / f"{name}-{rank}.pt")
            assert [k.tolist() for k in got["kept"]] == [k.tolist() for k in one.kept_positions], (name, rank)
            assert (got["logits"] - one.logits).abs().max().item() <= 1e-5, (name, rank)
