"""Every bad input fails early with an error that names the field, the value and what is allowed.

Config mistakes are ConfigError / UnknownNameError from ``load_config`` (before any weight loads);
model mistakes are ConfigError / UnsupportedModelError when the pipeline is built; prompt mistakes
are InputError before the forward pass. Every shipped YAML must validate.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from sliminfer import SlimPipeline, load_config
from sliminfer.core.config import SlimConfig, parse_overrides, preset_names
from sliminfer.core.errors import (
    ConfigError,
    InputError,
    UnknownNameError,
    UnsupportedModelError,
)
from sliminfer.testing.tiny_models import tiny_model

ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "model": {"dtype": "float32", "device": "cpu"},
    "pruning": {
        "scorer": {"name": "token_unit", "block_size": 32, "unit_size": 8},
        "schedule": {"name": "fixed", "layers": [2, 4], "budgets": [256, 128]},
    },
}


def with_(path: str, value) -> dict:
    """GOOD with the dotted ``path`` set to ``value``."""
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def config_error(source, *expected: str, error: type[Exception] = ConfigError) -> Exception:
    """Load ``source``, expect ``error`` whose message contains every ``expected`` text."""
    with pytest.raises(error) as info:
        load_config(source)
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    return info.value


def test_good_config_loads():
    config = load_config(GOOD)
    assert config.pruning.schedule.options == {"layers": [2, 4], "budgets": [256, 128]}
    assert load_config(config.model_dump()) == config  # round trip


# unknown names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, name, field, kind, suggestion, available",
    [
        ("pruning.scorer", {"name": "token_unti"}, "pruning.scorer.name", "scorer", "token_unit", "token_unit"),
        ("pruning.schedule", {"name": "fixd", "layers": [2], "budgets": [128]}, "pruning.schedule.name",
         "schedule", "fixed", "fixed, ratio"),
        ("cache", {"name": "gpuu"}, "cache.name", "cache", "gpu", "gpu"),
    ],
)
def test_unknown_strategy_name_suggests_and_lists(path, name, field, kind, suggestion, available):
    err = config_error(
        with_(path, name), f"{field}: unknown {kind} {name['name']!r}", f"Did you mean {suggestion!r}?",
        "Available: ", *available.split(", "), error=UnknownNameError,
    )
    assert err.kind == kind and suggestion in err.available


def test_unknown_name_far_from_any_gives_no_suggestion():
    err = config_error(with_("pruning.scorer", "zzzzzz"), "unknown scorer 'zzzzzz'", "Available:",
                       error=UnknownNameError)
    assert "Did you mean" not in str(err)


def test_missing_preset_lists_presets():
    err = config_error("no_such_preset", "unknown preset 'no_such_preset'", "Available:", error=UnknownNameError)
    assert err.available == preset_names()
    for name in preset_names():
        assert name in str(err)


def test_missing_yaml_file():
    config_error("missing.yaml", "config: got 'missing.yaml'", "neither a file nor a preset")


# schedule and scorer options -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "budgets, texts",
    [
        ([256, 100], ["pruning.schedule.budgets: got 100", "positive multiple of the block size 32"]),
        ([256, -64], ["pruning.schedule", "budgets must be positive", "-64"]),
        ([256, 0], ["pruning.schedule", "budgets must be positive", "[256, 0]"]),
        ([128, 256], ["pruning.schedule", "budgets must not increase", "[128, 256]"]),
        ([256, 32], ["pruning.schedule.budgets: got 32", "at least 2 blocks (64 tokens)"]),
    ],
)
def test_bad_budgets(budgets, texts):
    config_error(with_("pruning.schedule.budgets", budgets), *texts)


@pytest.mark.parametrize(
    "layers, texts",
    [
        ([2, 2], ["pruning.schedule", "layers must be strictly increasing with no repeats", "[2, 2]"]),
        ([4, 2], ["pruning.schedule", "layers must be strictly increasing", "[4, 2]"]),
        ([-1, 2], ["pruning.schedule", "layers must be >= 0", "[-1, 2]"]),
        ([2], ["pruning.schedule", "layers (1) and budgets (2) differ in length"]),
        ([], ["pruning.schedule.layers: got []", "at least 1 item"]),
    ],
)
def test_bad_layers(layers, texts):
    config_error(with_("pruning.schedule.layers", layers), *texts)


def test_pruning_layer_beyond_the_model():
    with pytest.raises(ConfigError) as info:
        SlimPipeline.from_pretrained(tiny_model("llama"), config=with_("pruning.schedule.layers", [2, 9]))
    assert (info.value.field, info.value.value) == ("pruning.schedule.layers", 9)
    assert "pruning.schedule.layers: got 9; must be a layer index in 0..5" in str(info.value)


def test_unit_size_must_divide_block_size():
    config_error(with_("pruning.scorer.unit_size", 12), "pruning.scorer", "unit_size 12 must divide block_size 32")


def test_scorer_option_bounds_and_unknown_options():
    err = config_error(with_("pruning.scorer.block_size", 0), "pruning.scorer.block_size: got 0",
                       "greater than or equal to 1")
    assert err.field == "pruning.scorer.block_size"
    config_error(with_("pruning.scorer.blok_size", 32), "pruning.scorer.blok_size: got 32", "unknown key")


def test_ratio_schedule_block_size_must_match_scorer():
    schedule = {"name": "ratio", "layers": [2], "ratios": [0.5], "block_size": 64}
    config_error(with_("pruning.schedule", schedule), "pruning.schedule.block_size: got 64",
                 "must equal the scorer's block_size 32")
    config_error(with_("pruning.schedule", {**schedule, "ratios": [1.5]}), "pruning.schedule",
                 "ratios must lie in (0, 1]", "[1.5]")


# sections and keys ------------------------------------------------------------------------------
def test_unknown_top_level_key_lists_allowed(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("modle: {dtype: float32}\n")
    err = config_error(path, "modle: got {'dtype': 'float32'}", "unknown key",
                       "allowed keys: attention, cache, decode, generation, model, prefill, prompt_filter, pruning")
    assert err.field == "modle"


def test_unknown_nested_key_lists_allowed(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model: {sourse: /some/where}\n")
    err = config_error(path, "model.sourse: got '/some/where'", "unknown key",
                       "allowed keys: attention, device, dtype, random_init, source")
    assert err.field == "model.sourse"
    config_error(with_("pruning.prune_at", "x"), "pruning.prune_at", "allowed keys: prune_point, schedule, scorer")


@pytest.mark.parametrize(
    "path, value, field, allowed",
    [
        ("model.dtype", "float8", "model.dtype", "'auto', 'float32', 'float16' or 'bfloat16'"),
        ("model.device", "tpu", "model.device", "should match pattern"),
        ("model.attention", "flash", "model.attention", "'sdpa', 'eager' or 'flash_attention_2'"),
        ("pruning.prune_point", "before_mlp", "pruning.prune_point", "'after_attention' or 'after_layer'"),
    ],
)
def test_bad_literals(path, value, field, allowed):
    err = config_error(with_(path, value), f"{field}: got {value!r}", allowed)
    assert (err.field, err.value) == (field, value)


def test_generation_bounds_in_yaml():
    data = {**GOOD, "generation": {"top_p": 1.5}}
    config_error(data, "generation.top_p: got 1.5", "less than or equal to 1")


def test_non_mapping_and_empty_yaml(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- model\n- pruning\n")
    config_error(path, "must be a YAML mapping")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == SlimConfig()


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    with pytest.raises(ConfigError, match="safe"):
        load_config(path)
    with pytest.raises(ConfigError, match="safe"):
        load_config(None, [f"model=!!python/object/apply:os.mkdir [{str(marker)!r}]"])
    assert not marker.exists()


# overrides ----------------------------------------------------------------------------------------
def test_overrides_on_a_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    config = load_config(path, ["pruning.schedule.budgets=[128,64]", "generation.max_new_tokens=7"])
    assert config.pruning.schedule.options["budgets"] == [128, 64]
    assert config.generation.max_new_tokens == 7
    assert load_config(path, {"model__dtype": "float16"}).model.dtype == "float16"
    # overridden values are validated like the file's own
    with pytest.raises(ConfigError, match=r"pruning\.schedule\.budgets: got 100"):
        load_config(path, ["pruning.schedule.budgets=[128,100]"])
    with pytest.raises(ConfigError, match=r"model\.dtype: got 'float32'; is not a section"):
        load_config(path, ["model.dtype.bits=8"])


def test_pruning_null_override_disables_pruning(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert load_config(path).pruning is not None
    assert load_config(path, ["pruning=null"]).pruning is None
    assert load_config(path, ["pruning="]).pruning is None


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=", "e=null", "f = text", "g=a=b"]) == {
        "a.b": 1, "c": [1, 2], "d": None, "e": None, "f": "text", "g": "a=b",
    }
    for bad in ("model.dtype", "=float32", " =1"):
        with pytest.raises(ConfigError) as info:
            parse_overrides([bad])
        assert info.value.field == "override" and info.value.value == bad
        assert "dotted.key=value" in str(info.value)


# every shipped YAML validates ------------------------------------------------------------------------
CONFIG_FILES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize(
    "path",
    CONFIG_FILES or [pytest.param(None, marks=pytest.mark.skip(reason="no configs/*.yaml yet"))],
    ids=lambda p: p.name if p else "none",
)
def test_shipped_config_validates(path):
    load_config(path)


@pytest.mark.parametrize(
    "name", preset_names() or [pytest.param(None, marks=pytest.mark.skip(reason="no presets yet"))]
)
def test_preset_validates(name):
    load_config(name)


# the pipeline: generate arguments, prompts, models ------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    return SlimPipeline(tiny_model("llama", max_position_embeddings=64), config=load_config({"model": GOOD["model"]}))


@pytest.mark.parametrize(
    "kwargs, field, value, allowed",
    [
        ({"temperature": -1}, "generation.temperature", -1, "greater than or equal to 0"),
        ({"max_new_tokens": 0}, "generation.max_new_tokens", 0, "greater than or equal to 1"),
        ({"top_k": 0}, "generation.top_k", 0, "greater than or equal to 1"),
        ({"top_p": 0.0}, "generation.top_p", 0.0, "greater than 0"),
    ],
)
def test_generate_arguments_are_validated(pipe, kwargs, field, value, allowed):
    with pytest.raises(ConfigError) as info:
        pipe.generate(torch.tensor([[1, 2, 3]]), **kwargs)
    assert (info.value.field, info.value.value) == (field, value)
    assert f"{field}: got {value!r}" in str(info.value) and allowed in str(info.value)


def test_empty_prompt(pipe):
    with pytest.raises(InputError, match="prompt: empty"):
        pipe.prefill(torch.empty((1, 0), dtype=torch.long))
    with pytest.raises(InputError, match="prompt: empty"):
        pipe.generate(torch.empty((1, 0), dtype=torch.long), max_new_tokens=1)


def test_prompt_longer_than_the_model(pipe):
    with pytest.raises(InputError, match="prompt: 65 tokens is longer than the model's maximum of 64 positions"):
        pipe.prefill(torch.ones((1, 65), dtype=torch.long))
    assert pipe.prefill(torch.ones((1, 64), dtype=torch.long)).prompt_tokens == 64


def test_batch_is_refused(pipe):
    with pytest.raises(InputError, match="a batch of 2 prompts .* one prompt per call"):
        pipe.prefill(torch.ones((2, 8), dtype=torch.long))
    with pytest.raises(InputError, match=r"a tensor of shape \(1, 2, 8\)"):
        pipe.prefill(torch.ones((1, 2, 8), dtype=torch.long))


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=1, n_head=2)).eval()


def test_unsupported_architecture_lists_supported(tmp_path):
    for build in (lambda: SlimPipeline(tiny_gpt2()), lambda: SlimPipeline.from_pretrained(tiny_gpt2())):
        with pytest.raises(UnsupportedModelError) as info:
            build()
        message = str(info.value)
        assert "model_type 'gpt2'" in message
        assert "supported model types: gemma, llama, mistral, phi3, qwen2, qwen3" in message
    # from a checkpoint directory it fails on config.json alone, before any weight is read
    tiny_gpt2().config.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="model_type 'gpt2'"):
        SlimPipeline.from_pretrained(tmp_path, config={"model": {"device": "cpu"}})


def test_missing_model_path(tmp_path):
    missing = tmp_path / "no-model-here"
    for build in (lambda: SlimPipeline.from_pretrained(missing, config={"model": {"device": "cpu"}}),
                  lambda: SlimPipeline.from_config({"model": {"source": str(missing), "device": "cpu"}})):
        with pytest.raises(ConfigError) as info:
            build()
        assert (info.value.field, info.value.value) == ("model.source", str(missing))
        assert "must be a local Hugging Face checkpoint directory containing config.json" in str(info.value)
