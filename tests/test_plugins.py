"""Plugins: the installed example package (entry point ``example``), blocking, in-process plugins.

CI installs ``plugins/sliminfer-plugin-example`` (``pip install --no-deps --no-build-isolation -e``);
``importorskip`` only guards a checkout where it is not installed.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import Field

from sliminfer import SlimPipeline, hookimpl, load_config
from sliminfer.core.errors import ConfigError, SlimInferError, UnknownNameError
from sliminfer.core.registry import BLOCK_ENV, Registry, get_registry, reset_registry
from sliminfer.strategies.base import Schedule, Scorer, ScorerConfig
from sliminfer.testing.tiny_models import tiny_model

PLUGIN_YAML = """\
model: {dtype: float32, device: cpu}
pruning:
  scorer: {name: key_norm, block_size: 32, window: 4, query_weight: 0.5}
  schedule: {name: fixed, layers: [1, 3], budgets: [192, 128]}
"""


@pytest.fixture(autouse=True)
def fresh_registry():
    """Every test starts and ends with a registry rebuilt from the current environment."""
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def example_plugin(monkeypatch):
    """The installed example plugin's module, loaded whatever the caller's environment blocks."""
    module = pytest.importorskip("sliminfer_plugin_example.plugin")
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    reset_registry()
    return module


# the installed example plugin -------------------------------------------------------------------
def test_installed_plugin_is_listed_under_its_entry_point_name(example_plugin):
    entry = get_registry().get("scorer", "key_norm")
    assert entry.plugin == "example"
    assert entry.cls is example_plugin.KeyNormScorer
    assert entry.summary  # the first docstring line, shown by `sliminfer plugins`
    assert get_registry().has_observers("sliminfer_prune")


def test_yaml_selecting_plugin_scorer_prunes_a_prefill(example_plugin, tmp_path):
    path = tmp_path / "key_norm.yaml"
    path.write_text(PLUGIN_YAML)
    config = load_config(path)
    assert config.pruning.scorer.name == "key_norm"
    assert config.pruning.scorer.options["query_weight"] == 0.5

    example_plugin.DECISIONS.clear()
    pipe = SlimPipeline.from_pretrained(tiny_model("llama"), config=path)
    ids = torch.randint(1, 256, (1, 300), generator=torch.Generator().manual_seed(0))
    result = pipe.prefill(ids)

    tokens = result.tokens_per_layer
    assert tokens[:2] == [300, 300]
    assert all(a >= b for a, b in zip(tokens, tokens[1:]))
    assert tokens[2] <= 192 and tokens[-1] <= 128 < tokens[2]
    assert torch.isfinite(result.logits).all()
    # the plugin's observer saw both decisions, in order
    seen = [(d.layer, d.budget, d.tokens_before, d.tokens_kept) for d in example_plugin.DECISIONS]
    assert seen == [(1, 192, 300, tokens[2]), (3, 128, tokens[2], tokens[4])]


def test_key_norm_ranks_low_norm_keys_first_and_blends_the_query(example_plugin):
    scorer = example_plugin.KeyNormScorer(example_plugin.KeyNormConfig(block_size=4, window=2))
    keys = torch.ones(1, 2, 12, 8)  # 3 blocks of 4 tokens, 2 KV heads
    keys[:, :, 5] = 0.01  # one low-norm key in block 1
    keys[:, :, 8:] *= 3.0  # block 2 all large
    queries = torch.randn(1, 4, 2, 8)
    scores = scorer.score_blocks(queries, keys)
    assert scores.shape == (1, 3)
    assert scores.argmax(dim=-1).item() == 1 and scores.argmin(dim=-1).item() == 2

    aligned = example_plugin.KeyNormScorer(example_plugin.KeyNormConfig(block_size=4, window=2, query_weight=1.0))
    queries = torch.zeros(1, 4, 2, 8)
    queries[..., 0] = 1.0  # local query along dimension 0
    keys = torch.zeros(1, 2, 12, 8)
    keys[:, :, :4, 1] = 5.0  # block 0: long keys orthogonal to the query
    keys[:, :, 4:8, 0] = 2.0  # block 1: aligned with the query
    keys[:, :, 8:, 0] = 0.5
    assert aligned.score_blocks(queries, keys).argsort(descending=True)[0].tolist() == [1, 2, 0]


def test_plugin_config_bounds_are_checked(example_plugin):
    with pytest.raises(ConfigError) as info:
        load_config({
            "pruning": {"scorer": {"name": "key_norm", "query_weight": 1.5},
                        "schedule": {"name": "fixed", "layers": [2], "budgets": [256]}}
        })
    assert info.value.field == "pruning.scorer.query_weight"
    assert "1.5" in str(info.value) and "less than or equal to 1" in str(info.value)


# blocking ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("blocked", ["example", "*", "other, example"])
def test_blocked_plugin_is_not_loaded(example_plugin, monkeypatch, blocked):
    monkeypatch.setenv(BLOCK_ENV, blocked)
    reset_registry()
    if "other" in blocked:  # no plugin of that name is installed: a typo, most likely
        with pytest.warns(UserWarning, match="unknown plugin 'other'"):
            registry = get_registry()
    else:
        registry = get_registry()
    with pytest.raises(UnknownNameError) as info:
        registry.get("scorer", "key_norm", "pruning.scorer.name")
    message = str(info.value)
    builtin_scorers = f"Available: {', '.join(sorted(Registry(load_entry_points=False).entries['scorer']))}"
    assert "pruning.scorer.name" in message and "unknown scorer 'key_norm'" in message
    assert message.endswith(builtin_scorers)
    assert not registry.has_observers("sliminfer_prune")  # its observer is gone too
    if blocked == "*":
        assert {e.plugin for kind in registry.entries.values() for e in kind.values()} == {"sliminfer.builtins"}
    with pytest.raises(UnknownNameError, match=f"{builtin_scorers}$"):
        load_config({"pruning": {"scorer": "key_norm", "schedule": {"name": "fixed", "layers": [2], "budgets": [256]}}})


# in-process plugins -----------------------------------------------------------------------------
class LastTokensScorer(Scorer):
    """Later blocks score higher (a recency rule, for tests)."""

    class Config(ScorerConfig):
        decay: float = Field(1.0, gt=0.0, description="Score growth per block.")

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        n_blocks = keys.shape[2] // self.block_size
        return torch.arange(n_blocks, dtype=torch.float32).mul(self.config.decay).expand(keys.shape[0], -1)


class NotAScorer(Schedule):
    """A schedule, wrongly registered as a scorer."""

    def budget(self, layer: int, tokens: int) -> int | None:
        return None


class InlinePlugin:
    def __init__(self, name: str, cls: type) -> None:
        self.name, self.cls = name, cls

    @hookimpl
    def sliminfer_register(self, register) -> None:
        register.scorer(self.name, self.cls)


def test_in_process_plugin_adds_a_scorer_usable_from_config():
    registry = get_registry()
    registry.register_plugin(InlinePlugin("last_tokens", LastTokensScorer), name="inline")
    entry = registry.get("scorer", "last_tokens")
    assert entry.plugin == "inline" and entry.cls is LastTokensScorer
    config = load_config({
        "pruning": {"scorer": {"name": "last_tokens", "block_size": 32, "decay": 2.0},
                    "schedule": {"name": "fixed", "layers": [1], "budgets": [128]}}
    })
    pipe = SlimPipeline(tiny_model("llama"), config=config)
    result = pipe.prefill((torch.arange(300) % 255 + 1)[None])
    kept = result.kept_positions[2]
    # 9 full blocks of 32 and a 12-token tail; (128 - 12) // 32 = 3 blocks kept: the sink, the last full
    # block, and the one the recency rule ranks highest (block 7), then the tail
    assert kept.tolist() == list(range(32)) + list(range(224, 300))


def test_registering_a_non_scorer_class_raises():
    with pytest.raises(SlimInferError, match=r"scorer 'bad' as .*NotAScorer.*not a Scorer"):
        get_registry().register_plugin(InlinePlugin("bad", NotAScorer), name="bad-plugin")
    with pytest.raises(SlimInferError, match="not a Scorer"):
        get_registry().register_plugin(InlinePlugin("bad2", object()), name="bad-plugin-2")


def test_registering_a_name_twice_with_different_classes_raises():
    registry = get_registry()
    twice = r"scorer 'token_unit' registered twice: by 'sliminfer.builtins' and by 'dup'"
    with pytest.raises(SlimInferError, match=twice):
        registry.register_plugin(InlinePlugin("token_unit", LastTokensScorer), name="dup")
    assert registry.get("scorer", "token_unit").plugin == "sliminfer.builtins"
    # the same class under the same name again is harmless
    registry.register_plugin(InlinePlugin("last_tokens", LastTokensScorer), name="one")
    registry.register_plugin(InlinePlugin("last_tokens", LastTokensScorer), name="two")
    assert registry.get("scorer", "last_tokens").cls is LastTokensScorer
