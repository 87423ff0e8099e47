"""``prefill.compile``: each layer's norms, RoPE and MLP compiled (sliminfer.models.prefill_ops).

Oracle: the eager prefill of the same pipeline config. Compiled kernels round differently, so logits are
compared in float32 with a tolerance and the greedy tokens must be equal; the KV each layer keeps too.
One compiled graph must serve every layer (modules are arguments), or a 32-layer model would compile 32
times and fall back to eager past torch's recompile limit.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from sliminfer import SlimPipeline, load_config
from sliminfer.bench.shapes import build_random_model
from sliminfer.core.errors import ConfigError

PRUNED = ["pruning.scorer.name=token_unit", "pruning.schedule.name=fixed", "pruning.schedule.layers=[1]",
          "pruning.schedule.budgets=[256]"]


def _pair(shape: str, overrides: list[str]) -> tuple[SlimPipeline, SlimPipeline]:
    model = build_random_model(shape, torch.float32, torch.device("cpu"), "sdpa", 0)
    eager = SlimPipeline(model, None, load_config(None, ["model.device=cpu", *overrides]))
    compiled = SlimPipeline(model, None, load_config(None, ["model.device=cpu", "prefill.compile=true", *overrides]))
    return eager, compiled


@pytest.mark.parametrize(("shape", "overrides"), [
    ("tiny-llama", PRUNED),
    ("tiny-qwen2", []),
    ("tiny-llama", [*PRUNED, "attention.name=flexprefill", "attention.min_budget=128", "attention.min_tokens=256"]),
    ("tiny-llama", ["prompt_filter.name=gemfilter", "prompt_filter.layer=2", "prompt_filter.tokens=256"]),
    ("tiny-llama", [*PRUNED, "cache.name=offload", "cache.decode_budget=128"]),
])
def test_compiled_prefill_matches_the_eager_one(shape: str, overrides: list[str]) -> None:
    eager, compiled = _pair(shape, overrides)
    ids = torch.randint(0, 100, (1, 700), generator=torch.Generator().manual_seed(1))
    want, got = eager.prefill(ids), compiled.prefill(ids)
    assert got.tokens_per_layer == want.tokens_per_layer
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    for layer in range(len(want.tokens_per_layer)):
        for kv in ("layer_keys", "layer_values"):
            torch.testing.assert_close(getattr(got.cache, kv)(layer), getattr(want.cache, kv)(layer), atol=1e-5,
                                       rtol=1e-5)
    assert compiled.generate(ids, max_new_tokens=6).token_ids == eager.generate(ids, max_new_tokens=6).token_ids


def test_one_graph_serves_every_layer() -> None:
    torch._dynamo.reset()
    counters.clear()
    _, compiled = _pair("tiny-llama", PRUNED)
    for n in (700, 530):  # two prompt lengths, four layers at two lengths each
        compiled.prefill(torch.randint(0, 100, (1, n)))
    # norm, RoPE and MLP: one graph each, the token dimension dynamic from the first call
    assert counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])


@pytest.mark.parametrize("fast", [False, True], ids=["prefill", "fast_path"])
def test_sparse_attention_gets_contiguous_qkv(fast: bool, monkeypatch) -> None:
    """Compiled, RoPE writes q/k contiguous and v is copied so (FlexAttention's TMA loads on Hopper), in the fast
    path too (the attention gets the projections' k/v, not the static decoder's buffer views)."""
    from sliminfer.strategies.sparse_attention import strategy

    seen: list[tuple[bool, ...]] = []
    kernel = strategy.block_sparse_attention

    def recording(query, key, value, *args):
        seen.append(tuple(t.is_contiguous() for t in (query, key, value)))
        return kernel(query, key, value, *args)

    monkeypatch.setattr(strategy, "block_sparse_attention", recording)
    _, compiled = _pair("tiny-llama", [*PRUNED, "attention.name=flexprefill", "attention.min_budget=128",
                                       "attention.min_tokens=256"])
    ids = torch.randint(0, 100, (1, 700), generator=torch.Generator().manual_seed(2))
    if fast:
        compiled.generate(ids, max_new_tokens=3, fast=True)
    else:
        compiled.prefill(ids)
    assert seen == [(True, True, True)] * 2  # layers 0 and 1 see the whole prompt


def test_prefill_compile_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="prefill.compile"):
        load_config(None, ["prefill.compile=sometimes"])
    assert load_config(None).prefill.compile is False


def test_refused_with_tensor_parallelism(monkeypatch) -> None:
    """Not yet checked with sharded heads (whose modules carry communication hooks): refused up front."""
    from sliminfer.models.base import ModelAdapter

    monkeypatch.setattr(ModelAdapter, "_find_head_shards", lambda self: object())
    model = build_random_model("tiny-llama", torch.float32, torch.device("cpu"), "sdpa", 0)
    with pytest.raises(ConfigError, match="prefill.compile: got True; not supported with tensor parallelism"):
        SlimPipeline(model, None, load_config(None, ["model.device=cpu", "prefill.compile=true"]))


def test_the_same_prompt_gives_the_same_logits_in_every_call() -> None:
    """A compiled graph specialised to the first length and a dynamic one for the rest round differently, so
    the same prompt gave other logits (and in bf16 on a GPU other pruning choices and tokens) in its first
    call than after another length had been seen (H100, 2026-12-07). The token dimension is dynamic from the
    first call: one graph per piece for every length, so the same kernels call after call. In float32 on the
    CPU both graphs happen to round alike, so the graph count is what fails here without that (6 graphs)."""
    torch._dynamo.reset()
    counters.clear()
    _, compiled = _pair("tiny-llama", PRUNED)
    ids = torch.randint(0, 100, (1, 700), generator=torch.Generator().manual_seed(2))
    first = compiled.prefill(ids).logits
    compiled.prefill(torch.randint(0, 100, (1, 530)))
    assert torch.equal(compiled.prefill(ids).logits, first)
    assert counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])
    assert not counters["recompiles"], dict(counters["recompiles"])


def test_smollm2_compiled_prefill_keeps_the_eager_tokens(smollm2, essay_ids) -> None:
    """Real weights (SmolLM2-135M, float32, CPU) with the smollm2-135m pruning preset and FlexPrefill in the
    layers before the first pruning: the compiled prefill keeps the same tokens in every layer, its logits stay
    within float32 rounding of the eager one, and generation gives the same text."""
    model, _ = smollm2
    # sparse from 1k tokens on (the default is 4k), so that the 2.5k prompt's first 18 layers are sparse
    overrides = ["model.device=cpu", "attention.name=flexprefill", "attention.min_tokens=1024",
                 "attention.min_budget=256"]
    eager = SlimPipeline(model, None, load_config("smollm2-135m", overrides))
    compiled = SlimPipeline(model, None, load_config("smollm2-135m", [*overrides, "prefill.compile=true"]))
    ids = essay_ids[:, :2500]
    want, got = eager.prefill(ids), compiled.prefill(ids)
    assert got.tokens_per_layer == want.tokens_per_layer and min(want.tokens_per_layer) < ids.shape[1]
    densities = [float(d.mean()) for d in compiled.forward.attention.densities.values()]
    assert densities and max(densities) < 1.0, densities  # the sparse attention ran, not its dense fallback
    for a, b in zip(got.kept_positions, want.kept_positions):
        assert torch.equal(a, b)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    assert compiled.generate(ids, max_new_tokens=8).token_ids == eager.generate(ids, max_new_tokens=8).token_ids


@pytest.mark.parametrize("field", ["prefill.compile", "decode.compile"])
def test_refused_up_front_without_a_compiler(field: str) -> None:
    """On a CPU without a working C++ compiler inductor fails inside the first forward pass; the pipeline
    refuses the field when it is built instead, naming it and what is missing."""
    from torch._inductor import config as inductor_config

    from sliminfer.decode import compile_cache

    model = build_random_model("tiny-llama", torch.float32, torch.device("cpu"), "sdpa", 0)
    compile_cache._missing_compiler.cache_clear()
    try:
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}), pytest.raises(
                ConfigError, match=rf"{field}: got True; torch.compile on cpu needs a working C\+\+ compiler"):
            SlimPipeline(model, None, load_config(None, ["model.device=cpu", f"{field}=true"]))
    finally:
        compile_cache._missing_compiler.cache_clear()
    SlimPipeline(model, None, load_config(None, ["model.device=cpu", f"{field}=true"]))  # with the compiler back


def test_every_device_of_the_model_is_checked(monkeypatch) -> None:
    """A model spread over a GPU and the CPU (device_map) compiles for both: a missing compiler for either is
    named."""
    from sliminfer.decode import compile_cache

    monkeypatch.setattr(compile_cache, "_missing_compiler", lambda kind: "Triton" if kind == "cuda" else None)
    compile_cache.check_can_compile("prefill.compile", [torch.device("cpu")])
    with pytest.raises(ConfigError, match="prefill.compile: got True; torch.compile on cuda needs Triton"):
        compile_cache.check_can_compile("prefill.compile", [torch.device("cpu"), torch.device("cuda", 1)])


def test_refused_before_any_weight_loads(monkeypatch, capsys) -> None:
    """``from_config`` and ``sliminfer config validate`` refuse a compile that cannot run from the config alone:
    the model is never loaded (a real checkpoint would take minutes to load before the same error)."""
    from sliminfer.cli.main import main
    from sliminfer.core import loading
    from sliminfer.decode import compile_cache

    monkeypatch.setattr(compile_cache, "_missing_compiler", lambda kind: "a working C++ compiler")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match="decode.compile: got True; torch.compile on cpu needs a working C"):
        SlimPipeline.from_config(None, **{"model.device": "cpu", "decode.compile": True})
    assert main(["config", "validate", "origin", "model.device=cpu", "prefill.compile=true"]) == 2
    assert "prefill.compile: got True; torch.compile on cpu needs" in capsys.readouterr().err
