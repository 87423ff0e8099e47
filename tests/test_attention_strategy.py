"""The ``attention`` kind (sliminfer/strategies/attention.py): a layer's prefill attention as a strategy.

1. ``dense`` on every layer is the path without an ``attention:`` section bit for bit (fp32, tiny Llama
   and Qwen3, sdpa and eager, unpruned and pruned): prefill logits, every layer's KV, greedy tokens; also
   with the ``offload`` cache manager.
2. ``layers: null`` resolves to the layers that see the whole prompt: up to and including the schedule's
   first pruning layer (all when unpruned).
3. A test-only strategy, registered in-process, is called for exactly the configured layers, in the
   prefill only, with q/k/v as documented, and its output is what the layer uses.
4. Bad sections are refused before any forward, naming the field and the value.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sliminfer import ConfigError, SlimPipeline, UnknownNameError, hookimpl, load_config
from sliminfer.cli.main import main
from sliminfer.core.config import SlimConfig, read_config
from sliminfer.core.preflight import check_config_fits_checkpoint
from sliminfer.core.registry import Registry, get_registry
from sliminfer.models.base import ModelAdapter
from sliminfer.strategies.attention import AttentionStrategy, strategy_layers
from sliminfer.strategies.dense_attention import DenseAttention
from sliminfer.testing.tiny_models import tiny_model

LAYERS = 6  # tiny_models' depth
PRUNING = {
    "scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
    "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]},
}


def _ids(n: int = 301, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


def _config(pruned: bool, attention: dict | None = None, cache: dict | None = None) -> dict:
    config: dict = {"pruning": PRUNING} if pruned else {}
    if attention is not None:
        config["attention"] = attention
    if cache is not None:
        config["cache"] = cache
    return config


def _assert_same_prefill(a, b) -> None:
    assert torch.equal(a.logits, b.logits)
    assert a.tokens_per_layer == b.tokens_per_layer
    for layer in range(LAYERS):
        assert torch.equal(a.cache.layer_keys(layer), b.cache.layer_keys(layer)), layer
        assert torch.equal(a.cache.layer_values(layer), b.cache.layer_values(layer)), layer


# 1. dense is the stock path, exactly ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3"])  # phi3: q/k/v split from one fused qkv_proj
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("layers", [None, list(range(LAYERS))], ids=["layers_null", "every_layer"])
def test_dense_equals_the_stock_path_exactly(arch: str, backend: str, pruned: bool, layers: list[int] | None) -> None:
    model = tiny_model(arch, attention=backend)
    stock = SlimPipeline.from_pretrained(model, config=_config(pruned))
    dense = SlimPipeline.from_pretrained(model, config=_config(pruned, {"name": "dense", "layers": layers}))
    assert isinstance(dense.forward.attention, DenseAttention) and stock.forward.attention is None
    a, b = stock.prefill(_ids(), reserve_tokens=8), dense.prefill(_ids(), reserve_tokens=8)
    _assert_same_prefill(a, b)
    assert (a.tokens_per_layer[-1] < 301) == pruned


@pytest.mark.parametrize("fast", [False, True], ids=["eager_decode", "static_decode"])
def test_dense_generate_gives_the_stock_tokens(fast: bool) -> None:
    model = tiny_model("qwen3", seed=1)
    stock = SlimPipeline.from_pretrained(model, config=_config(True))
    dense = SlimPipeline.from_pretrained(model, config=_config(True, {"name": "dense", "layers": [0, 2, 5]}))
    ids = _ids(250, seed=4)
    ours = dense.generate(ids, max_new_tokens=12, fast=fast)
    assert ours.token_ids == stock.generate(ids, max_new_tokens=12, fast=fast).token_ids


def test_pruned_offload_with_dense_equals_it_without() -> None:
    model = tiny_model("llama", seed=2)
    offload = {"name": "offload", "block_size": 16, "unit_size": 4, "decode_budget": 96, "gamma": 0.9}
    plain = SlimPipeline.from_pretrained(model, config=_config(True, cache=offload))
    dense = SlimPipeline.from_pretrained(model, config=_config(True, {"name": "dense", "layers": [0, 1, 4]}, offload))
    ids = _ids(301, seed=5)
    a, b = plain.prefill(ids, reserve_tokens=16), dense.prefill(ids, reserve_tokens=16)
    _assert_same_prefill(a, b)
    tok_a = tok_b = a.logits.argmax(-1, keepdim=True)
    for step in range(12):  # the manager selects blocks by the decode queries: the same ones
        la = plain.forward.decode_step(tok_a, 301 + step, a.cache)
        lb = dense.forward.decode_step(tok_b, 301 + step, b.cache)
        assert torch.equal(la, lb), step
        tok_a, tok_b = la.argmax(-1, keepdim=True), lb.argmax(-1, keepdim=True)
    assert a.cache.stats()["swaps_total"] == b.cache.stats()["swaps_total"]


# 2. which layers null means ----------------------------------------------------------------------------
def _schedule(name: str, layers: list[int]):
    options = {"fixed": {"budgets": [128] * len(layers)}, "ratio": {"ratios": [0.5] * len(layers)}}[name]
    spec = load_config({"pruning": {"schedule": {"name": name, "layers": layers, **options}}}).pruning.schedule
    return get_registry().build("schedule", spec, "pruning.schedule")


@pytest.mark.parametrize(
    "layers,schedule,expected",
    [
        (None, None, set(range(LAYERS))),
        (None, ("fixed", [2, 4]), {0, 1, 2}),  # the pruning layer's attention sees all
        (None, ("ratio", [3]), {0, 1, 2, 3}),
        (None, ("fixed", [0, 3]), {0}),
        ([5, 0, 2], ("fixed", [1]), {0, 2, 5}),  # listed layers are taken as they are, pruned ones too
        ([], None, set()),
    ],
)
def test_layer_resolution(layers, schedule, expected) -> None:
    built = _schedule(*schedule) if schedule is not None else None
    assert strategy_layers(layers, built, LAYERS) == expected


@pytest.mark.parametrize("point", ["after_attention", "after_layer"])
def test_pipeline_resolves_null_to_the_layers_that_see_the_whole_prompt(point: str) -> None:
    config = {"pruning": {**PRUNING, "prune_point": point}, "attention": "dense"}
    pipe = SlimPipeline.from_pretrained(tiny_model("llama"), config=config)
    assert sorted(pipe.forward.attend) == [0, 1]  # PRUNING prunes first at layer 1
    assert SlimPipeline.from_pretrained(tiny_model("llama")).forward.attend == {}  # no section: no strategy


# 3. the engine calls a strategy where configured, and uses its output -----------------------------------
class ZeroAttention(AttentionStrategy):
    """Records each call and returns zeros (test only)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.calls: list[tuple[int, tuple, tuple, tuple, bool]] = []

    def attend(self, adapter: ModelAdapter, layer: int, module: torch.nn.Module, query: torch.Tensor,
               key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        assert module is adapter.layers[layer].self_attn
        self.calls.append((layer, tuple(query.shape), tuple(key.shape), tuple(value.shape), attention_mask is None))
        dense = adapter.own_attention(module, query, key, value, attention_mask)
        return torch.zeros_like(dense)


class ZeroPlugin:
    @hookimpl
    def sliminfer_register(self, register) -> None:
        register.attention("zero", ZeroAttention)


@pytest.fixture
def zero_registry() -> Registry:
    """A registry of the built-ins plus the test strategy (the process-wide one is left alone)."""
    registry = Registry(load_entry_points=False)
    registry.register_plugin(ZeroPlugin(), name="zero-plugin")
    return registry


def _zero_pipe(model, registry: Registry, layers: list[int], pruned: bool = False) -> SlimPipeline:
    config = SlimConfig.model_validate(_config(pruned, {"name": "zero", "layers": layers}))
    return SlimPipeline(model, config=config, registry=registry)


def test_plugin_strategy_is_listed_and_named_in_errors(zero_registry) -> None:
    entry = zero_registry.get("attention", "zero")
    assert entry.plugin == "zero-plugin" and entry.summary == "Records each call and returns zeros (test only)."
    available = "Available: dense, flexprefill, minference, zero"  # the built-ins and the plugin's
    with pytest.raises(UnknownNameError, match=rf"attention\.name: unknown attention 'zeros'.*{available}"):
        zero_registry.check_config(SlimConfig.model_validate({"attention": {"name": "zeros"}}))


def test_strategy_runs_on_exactly_its_layers_in_the_prefill_only(zero_registry) -> None:
    model = tiny_model("llama", seed=6)
    pipe = _zero_pipe(model, zero_registry, [4, 1], pruned=True)
    strategy = pipe.forward.attention
    result = pipe.prefill(_ids(301), reserve_tokens=4)
    n = result.tokens_per_layer
    assert n[1] == 301 and n[4] < 301
    # layer order; q heads 4, KV heads 2 (not repeated), head_dim 16; sdpa takes no mask in the prefill
    assert strategy.calls == [(1, (1, 4, 301, 16), (1, 2, 301, 16), (1, 2, 301, 16), True),
                              (4, (1, 4, n[4], 16), (1, 2, n[4], 16), (1, 2, n[4], 16), True)]
    pipe.generate(_ids(40), max_new_tokens=5)
    assert [call[0] for call in strategy.calls] == [1, 4, 1, 4]  # one more prefill; the 4 decode steps: none


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_strategy_output_is_what_the_layer_uses(zero_registry, backend: str) -> None:
    """Zero attention output in layers 1 and 3 is the model whose o_proj there is zero (no bias in Llama)."""
    model = tiny_model("llama", seed=7, attention=backend)
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        for layer in (1, 3):
            silenced.model.layers[layer].self_attn.o_proj.weight.zero_()
    pipe = _zero_pipe(model, zero_registry, [3, 1])
    ours = pipe.prefill(_ids(200))
    assert [call[0] for call in pipe.forward.attention.calls] == [1, 3]
    assert [call[4] for call in pipe.forward.attention.calls] == [backend == "sdpa"] * 2  # eager: the causal mask
    reference = SlimPipeline.from_pretrained(silenced).prefill(_ids(200))
    _assert_same_prefill(ours, reference)  # the KV is the layers' own: only the output was replaced
    assert not torch.equal(ours.logits, SlimPipeline.from_pretrained(model).prefill(_ids(200)).logits)


class LayoutAttention(ZeroAttention):
    """Records the strides of the keys and values it gets, then attends densely (test only)."""

    def attend(self, adapter, layer, module, query, key, value, attention_mask):
        self.calls.append((layer, key.stride(), value.stride()))
        return adapter.own_attention(module, query, key, value, attention_mask)


def test_prefill_and_fast_path_hand_the_strategy_one_kv_layout() -> None:
    """``generate(fast=True)`` writes the prompt KV into the static decoder's buffers (room for the new tokens);
    the strategy gets the projections' k/v, so the same layout as in ``prefill``, where the cache's buffer is
    prompt-sized (a compiled kernel seeing a second layout recompiles dynamically), and the same tokens."""
    registry = Registry(load_entry_points=False)

    class Plugin:
        @hookimpl
        def sliminfer_register(self, register) -> None:
            register.attention("layout", LayoutAttention)

    registry.register_plugin(Plugin(), name="layout-plugin")
    model = tiny_model("llama", seed=8)
    pipe = SlimPipeline(model, config=SlimConfig.model_validate(_config(True, {"name": "layout", "layers": [0, 1]})),
                        registry=registry)
    calls = pipe.forward.attention.calls
    ids = _ids(301, seed=9)
    pipe.prefill(ids)
    alone = calls[:]
    calls.clear()
    fast = pipe.generate(ids, max_new_tokens=6, fast=True)
    assert calls[:2] == alone and len(alone) == 2  # the fast path's prefill, then no call in its decode
    assert fast.token_ids == pipe.generate(ids, max_new_tokens=6).token_ids
    calls.clear()
    pipe.prefill(ids, reserve_tokens=16)  # a buffer with room: the cache's views have other strides
    assert calls == alone, "a buffer with spare room changed the layout the strategy sees"


# 4. config ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "section",
    ["dense", {"name": "dense"}, {"name": "dense", "layers": [0, 2]}, {"name": "dense", "options": {}, "layers": None}],
)
def test_section_forms_and_round_trip(section, tmp_path) -> None:
    config = load_config({"attention": section})
    assert config.attention.name == "dense" and config.attention.options == {}
    assert config.model_dump()["attention"] == {"name": "dense", "layers": config.attention.layers}
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert read_config(path) == config


def test_override_adds_the_section() -> None:
    config = load_config("origin", ["attention.name=dense", "attention.layers=[1,2]"])
    assert config.attention.layers == [1, 2]
    assert load_config("origin").attention is None


BAD_SECTIONS = [
    ({"name": "flexprefil"}, UnknownNameError,
     ("attention.name", "unknown attention 'flexprefil'", "Did you mean 'flexprefill'?",
      "Available: dense, flexprefill, minference")),
    ({"name": "dense", "layers": [-1, 2]}, ConfigError, ("attention.layers: got [-1, 2]", "must be >= 0")),
    ({"name": "dense", "layers": [1, 1]}, ConfigError, ("attention.layers: got [1, 1]", "listed once")),
    ({"name": "dense", "layers": [True]}, ConfigError, ("attention.layers.0: got True", "not a boolean")),
    ({"name": "dense", "layers": [1.0]}, ConfigError, ("attention.layers.0: got 1.0", "valid integer")),
    ({"name": "dense", "layers": 3}, ConfigError, ("attention.layers: got 3", "valid list")),
    (5, ConfigError, ("attention: got 5", "valid dictionary")),
    ([0, 1], ConfigError, ("attention: got [0, 1]", "valid dictionary")),
    ({"layers": [0]}, ConfigError, ("attention.name", "Field required")),
    ({"name": "dense", "window": 3}, ConfigError, ("attention.window: got 3", "unknown key")),
    ({"name": "dense", "options": {}, "window": 3}, ConfigError,
     ("attention.window: got 3", "unknown key; allowed keys: layers, name, options")),
    ({"name": "dense", "options": {"window": 3}}, ConfigError, ("attention.window: got 3", "unknown key")),
]


@pytest.mark.parametrize("section,error,says", BAD_SECTIONS, ids=lambda v: repr(v)[:40])
def test_bad_section_is_refused(section, error, says) -> None:
    with pytest.raises(error) as info:
        load_config({"attention": section})
    for text in says:
        assert text in str(info.value)


@pytest.mark.parametrize("layers", [[6], [0, 9]])
def test_layers_past_the_model_are_refused_before_any_forward(layers: list[int], monkeypatch) -> None:
    monkeypatch.setattr(ModelAdapter, "embed", lambda *a: pytest.fail("a forward pass started"))
    config = load_config({"attention": {"name": "dense", "layers": layers}})
    bad = layers[-1]
    with pytest.raises(ConfigError, match=rf"attention\.layers: got {bad}; must be a layer index in 0\.\.5"):
        SlimPipeline.from_pretrained(tiny_model("llama"), config=config)
    with pytest.raises(ConfigError, match=rf"attention\.layers: got {bad}"):  # from config.json, before weights
        check_config_fits_checkpoint(config, get_registry(), tiny_model("llama").config)


def test_plugins_command_lists_the_kind(capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "attentions:\n  dense " in out and "[from sliminfer.builtins]" in out
