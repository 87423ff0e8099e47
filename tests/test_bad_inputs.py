"""Every bad input a user met, as tables: each is refused early with one of sliminfer's own errors
naming the argument or field, the value and what is allowed, or handled as a user would expect.

Tables: prompts, generation arguments, configs and checkpoints (Python API), and the command line.
A case that needs the model never to load patches the loaders to fail the test if they are reached.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from sliminfer.cli.main import main
from sliminfer.core.errors import ConfigError, InputError, SlimInferError, UnsupportedModelError
from sliminfer.core.pipeline import SlimPipeline, load_config
from tiny_models import tiny_model

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
]

# --- generation arguments ----------------------------------------------------------------------------
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
         ("generate.fast", "greedy only", "temperature=0.7")),
]


@pytest.mark.parametrize("case", PROMPT_CASES + GENERATION_CASES, ids=lambda c: c.id)
def test_pipeline_refuses(tiny, case: Case) -> None:
    with pytest.raises(case.error) as info:
        case.call(tiny)
    for text in case.says:
        assert text in str(info.value)


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


def _windowed_llama() -> torch.nn.Module:
    model = tiny_model("llama")
    model.config.sliding_window = 16  # as a Mistral-like config would carry it
    return model


MODEL_CASES = [
    Case("sliding-window layers (qwen2)", lambda: tiny_model("qwen2", use_sliding_window=True, sliding_window=16,
                                                             max_window_layers=2), UnsupportedModelError,
         ("sliding_attention", "full-attention layers only")),
    Case("sliding_window without layer_types", _windowed_llama, UnsupportedModelError,
         ("sliding_window=16", "full-attention layers only")),
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
            ("generate.fast", "greedy only", "drop --fast")),
    CliCase("bad override value after the flags", ["run", "origin", "--prompt", "hi", "generation.max_new_tokens=true"],
            2, ("generation.max_new_tokens: got True",)),
    CliCase("layers past the model", ["config", "validate", "smollm2-135m", "pruning.schedule.layers=[17,22,30]"], 2,
            ("pruning.schedule.layers: got 30", "0..29")),
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
