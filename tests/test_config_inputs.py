"""load_config's inputs: YAML keys (complex, merge ``<<``), YAML 1.2 floats, overrides given twice, wrong Python
types for ``source`` and ``overrides``, and a section override that merges into the preset's section.

Each mistake is a ConfigError naming the field or argument, the value and what is allowed; none is a raw
TypeError or AttributeError from inside the library, and nothing is silently coerced.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sliminfer import SlimPipeline, load_config
from sliminfer.core.config import SlimConfig, parse_overrides
from sliminfer.core.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def read_yaml(text: str):
    """``text`` read as load_config reads a file (sliminfer's own safe loader)."""
    from sliminfer.core.yaml_reading import ConfigLoader

    return yaml.load(text, Loader=ConfigLoader)


# 1. mapping keys must be strings ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, says",
    [
        ("? [a, b]\n: 1\n", r"mapping key \['a', 'b'\] is a sequence; mapping keys must be strings"),
        ("? {a: 1}\n: 1\n", r"mapping key \{'a': 1\} is a mapping; mapping keys must be strings"),
        ("generation: {1: 2}\n", r"mapping key 1 is int; mapping keys must be strings \(quote it: '1'\)"),
        ("yes: 2\n", r"mapping key True is bool; mapping keys must be strings \(quote it: 'yes'\)"),
    ],
)
def test_non_string_yaml_key_is_refused(tmp_path, text, says):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=says) as info:
        load_config(path)
    assert info.value.field == "config" and info.value.value == str(path)
    assert "line 1" in str(info.value)


def test_complex_key_in_an_override_is_refused():
    with pytest.raises(ConfigError, match=r"generation: got '\{\[a\]: 1\}'; .*mapping keys must be strings"):
        load_config("origin", ["generation={[a]: 1}"])


# 2. YAML merge keys --------------------------------------------------------------------------------------
def test_merge_keys_are_read_as_yaml_specifies():
    text = "defaults: &d {max_new_tokens: 8}\ngeneration: {<<: *d, seed: 1}\n"
    assert read_yaml(text) == yaml.safe_load(text) == {
        "defaults": {"max_new_tokens": 8}, "generation": {"max_new_tokens": 8, "seed": 1}}
    # a key written beside << wins over the merged one; of several merged mappings the first wins
    assert read_yaml("a: &a {s: 1, t: 1}\nb: &b {s: 2, u: 2}\nc: {<<: [*a, *b], t: 3}\n")["c"] == {
        "s": 1, "t": 3, "u": 2}
    # a merged mapping with a merge of its own brings its own (explicit) value
    assert read_yaml("a: {inner: &d {<<: {x: 1}, x: 2}}\ng: {<<: *d, y: 1}\n")["g"] == {"x": 2, "y": 1}


def test_merge_keys_in_a_config_file(tmp_path):
    path = write(tmp_path / "c.yaml", "generation:\n  <<: {max_new_tokens: 8, seed: 3}\n  seed: 1\n")
    generation = load_config(path).generation
    assert (generation.max_new_tokens, generation.seed) == (8, 1)


@pytest.mark.parametrize(
    "text",
    [
        "generation:\n  <<: {max_new_tokens: 8}\n  seed: 1\n  seed: 2\n",  # twice beside a merge
        "generation:\n  <<: {seed: 1, seed: 2}\n",  # twice inside the merged mapping
    ],
)
def test_key_written_twice_beside_a_merge_is_refused(tmp_path, text):
    with pytest.raises(ConfigError, match=r"config: got .*c\.yaml.*duplicate key 'seed'"):
        load_config(write(tmp_path / "c.yaml", text))


def test_merge_of_a_scalar_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"<< \(merge key\) takes a mapping or a list of mappings, not a scalar"):
        load_config(write(tmp_path / "c.yaml", "generation: {<<: 5}\n"))


# 3. YAML 1.2 floats with an exponent ------------------------------------------------------------------
@pytest.mark.parametrize("raw, value", [("1e-3", 1e-3), ("5E+2", 500.0), ("-2e4", -2e4), ("1.0e3", 1000.0),
                                        ("+.5e1", 5.0)])
def test_exponent_floats_are_floats(raw, value):
    parsed = parse_overrides([f"x={raw}"])["x"]
    assert isinstance(parsed, float) and parsed == value
    assert read_yaml(f"x: {raw}\n") == {"x": value}


def test_exponent_float_temperature_in_overrides_and_files(tmp_path):
    assert load_config("origin", ["generation.temperature=1e-3"]).generation.temperature == 1e-3
    assert load_config("origin", {"generation.temperature": 1e-3}).generation.temperature == 1e-3
    path = write(tmp_path / "c.yaml", "generation:\n  temperature: 1e-3\n  top_p: 5E-1\n")
    generation = load_config(path).generation
    assert (generation.temperature, generation.top_p) == (1e-3, 0.5)


def test_quoted_exponent_stays_a_string(tmp_path):
    assert parse_overrides(['x="1e-3"', "y='5E+2'"]) == {"x": "1e-3", "y": "5E+2"}
    with pytest.raises(ConfigError, match=r"generation\.temperature: got '1e-3'; Input should be a valid number"):
        load_config("origin", ['generation.temperature="1e-3"'])
    with pytest.raises(ConfigError, match=r"generation\.temperature: got '1e-3'; Input should be a valid number"):
        load_config(write(tmp_path / "c.yaml", "generation: {temperature: '1e-3'}\n"))


def test_exponent_float_is_not_taken_as_an_int():
    with pytest.raises(ConfigError, match=r"generation\.max_new_tokens: got 1000\.0; Input should be a valid integer"):
        load_config("origin", ["generation.max_new_tokens=1e3"])


def test_global_safe_loader_is_left_alone():
    assert yaml.safe_load("1e-3") == "1e-3"
    assert yaml.load("1e-3", Loader=yaml.SafeLoader) == "1e-3"


# 4. a key given twice as a.b and a__b ------------------------------------------------------------------
def test_dotted_and_double_underscore_key_in_a_list_is_set_twice():
    with pytest.raises(ConfigError, match=r"override: got 'generation__seed=2'; generation\.seed is set twice"):
        load_config(None, ["generation.seed=1", "generation__seed=2"])
    assert parse_overrides(["generation__seed=2"]) == {"generation.seed": 2}


def test_dotted_and_double_underscore_key_in_a_mapping_is_set_twice():
    with pytest.raises(ConfigError, match=r"overrides: got 'generation__seed'; generation\.seed is set twice"):
        load_config(None, {"generation.seed": 1, "generation__seed": 2})
    with pytest.raises(ConfigError, match=r"overrides: got 'generation__seed'; generation\.seed is set twice"):
        SlimPipeline.from_config(None, **{"generation.seed": 1, "generation__seed": 2})
    assert load_config(None, {"generation__seed": 2}).generation.seed == 2


# 5. wrong Python types for source and overrides ----------------------------------------------------------
SOURCE_FORMS = "the config source must be a preset name, a YAML path, a mapping, a SlimConfig or None"


@pytest.mark.parametrize("source, type_name", [(5, "int"), ([1, 2], "list"), (b"origin", "bytes"), (1.5, "float")])
def test_source_of_a_wrong_type(source, type_name):
    says = rf"source: got {re.escape(repr(source))}; {SOURCE_FORMS}, not {type_name}"
    with pytest.raises(ConfigError, match=says) as info:
        load_config(source)
    assert (info.value.field, info.value.value) == ("source", source)


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({1: 2}, r"overrides: got 1; keys must be dotted strings such as 'generation\.seed', not int"),
        ([("generation.seed", 1)], r"overrides: got \('generation\.seed', 1\); each item must be a 'key=value' "
                                   r"string, not tuple \(or give a mapping of dotted keys to values\)"),
        ("generation.seed=1", r"overrides: got 'generation\.seed=1'; is a single string; give a list of 'key=value' "
                              r"strings, e\.g\. \['generation\.seed=1'\]"),
        ("", r"overrides: got ''; is a single string"),
        (5, r"overrides: got 5; must be a mapping of dotted keys to values or a list of 'key=value' strings, "
            r"not int"),
        (["generation.seed=1", None], r"overrides: got None; each item must be a 'key=value' string, not NoneType"),
    ],
)
def test_overrides_of_a_wrong_type(overrides, says):
    with pytest.raises(ConfigError, match=says) as info:
        load_config("origin", overrides)
    assert info.value.field == "overrides"


def test_accepted_source_and_override_forms(tmp_path):
    path = write(tmp_path / "c.yaml", "generation: {seed: 3}\n")
    for source in ("origin", path, str(path), {"generation": {"seed": 3}}, SlimConfig(), None):
        assert isinstance(load_config(source, ("generation.max_new_tokens=2",)), SlimConfig)
    assert load_config(None, (f"generation.seed={i}" for i in [4])).generation.seed == 4
    assert load_config(None, []) == load_config(None, {}) == SlimConfig()


# 6. a section override given as a mapping -------------------------------------------------------------
def test_section_mapping_override_merges_into_the_preset():
    assert load_config("smollm2-135m").generation.max_new_tokens == 64
    for overrides in (["generation={seed: 1}"], {"generation": {"seed": 1}}):
        generation = load_config("smollm2-135m", overrides).generation
        assert (generation.max_new_tokens, generation.seed) == (64, 1)
    # nested: a schedule given without a name keeps the preset's scorer, schedule name and layers
    pruning = load_config("smollm2-135m", ["pruning={schedule: {budgets: [1024, 512, 256]}}"]).pruning
    assert pruning.scorer.name == "attention_unit"
    assert (pruning.schedule.name, pruning.schedule.options) == ("fixed", {
        "layers": [17, 22, 26], "budgets": [1024, 512, 256]})


def test_strategy_with_another_name_replaces_the_old_one():
    assert load_config("smollm2-135m-offload").cache.options  # the offload manager's own options
    cache = load_config("smollm2-135m-offload", ["cache={name: gpu}"]).cache
    assert (cache.name, cache.options) == ("gpu", {})
    # the same strategy: its options merge (also into the options: form)
    base = {"cache": {"name": "offload", "options": {"gamma": 0.5, "decode_budget": 256}}}
    cache = load_config(base, ["cache={gamma: 0.7}"]).cache
    assert (cache.name, cache.options) == ("offload", {"gamma": 0.7, "decode_budget": 256})


def test_null_still_removes_a_section():
    assert load_config("smollm2-135m").pruning is not None
    assert load_config("smollm2-135m", ["pruning=null"]).pruning is None
    assert load_config("smollm2-135m", {"pruning": None}).pruning is None


def test_override_values_are_not_shared_with_the_caller():
    generation = {"seed": 1}
    load_config(None, {"generation": generation, "generation.max_new_tokens": 2})
    assert generation == {"seed": 1}


def test_yaml_errors_are_one_line_with_line_and_column(tmp_path) -> None:
    """PyYAML's own text spans several lines and names the text "<unicode string>"; the error names the file,
    then line and column (1-based) and the problem, on one line."""
    path = tmp_path / "bad.yaml"
    path.write_text("generation:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message and "unicode string" not in message
    assert f"config: got '{path}'; is not valid (safe) YAML: line 3, column 3: duplicate key 'seed'" in message
    with pytest.raises(ConfigError, match=r"generation.stop: got '\[a'; is not a valid \(safe\) YAML value: line 1, "
                                          r"column 3: while parsing a flow sequence \(from line 1, column 1\)"):
        load_config("origin", ["generation.stop=[a"])


@pytest.mark.parametrize(("overrides", "says"), [
    (["pruning.scorer.window=100000"], "pruning.scorer.window: got 100000; the blocks holding the window's queries "
                                       "are always kept: with the sink 100096 tokens, more than the smallest budget "
                                       "512; use a window of at most 448 tokens"),
    (["pruning.schedule.budgets=[512,256,64]"], "pruning.schedule.budgets: got 64; must be at least 2 blocks "
                                                "(128 tokens)"),
])
def test_a_budget_smaller_than_what_a_stage_always_keeps_is_refused(overrides, says) -> None:
    """The sink and the window's blocks are kept whatever the budget: a smaller budget would be exceeded
    silently (a window of 100 tokens in blocks of 16 turned a budget of 64 into 128 kept tokens)."""
    with pytest.raises(ConfigError) as info:
        load_config("smollm2-135m", overrides)
    assert says in str(info.value)
    assert load_config("smollm2-135m", ["pruning.scorer.window=448"]).pruning.scorer.options["window"] == 448
