"""The `sliminfer` command: exit codes and what it prints."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
import transformers

from sliminfer import __version__
from sliminfer.cli.main import log_level, main
from sliminfer.core import registry as registry_module
from sliminfer.core.registry import BLOCK_ENV, reset_registry


def test_version_names_sliminfer_torch_and_transformers(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code in (0, None)  # argparse exits 0 (as None)
    out = capsys.readouterr().out
    assert out.splitlines() == [f"sliminfer {__version__}",
                                f"torch {torch.__version__}, transformers {transformers.__version__}"]


@pytest.fixture
def observer_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One entry-point plugin that loads (an observer), and a blocked name matching none (a typo): loading
    the registry then logs an INFO record ("loaded plugin") and warns once."""
    (tmp_path / "slimtest_cli_observer.py").write_text(
        "from sliminfer import hookimpl\n\n@hookimpl\ndef sliminfer_prune(event):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = [EntryPoint(name="observer", value="slimtest_cli_observer", group="sliminfer")]
    monkeypatch.setattr(registry_module, "plugin_entry_points", lambda: declared)
    monkeypatch.setenv(BLOCK_ENV, "no_such_plugin")
    reset_registry()
    yield
    reset_registry()


@pytest.mark.parametrize(("flags", "info", "warning"), [
    ([], False, True), (["-v"], True, True), (["--verbose", "-v"], True, True), (["-q"], False, False),
], ids=["default", "verbose", "very-verbose", "quiet"])
def test_verbosity_flags(flags: list[str], info: bool, warning: bool, observer_plugin: None, capsys) -> None:
    """Records of the sliminfer logger and Python warnings reach stderr as the flags say; stdout holds
    only the result; afterwards the package logger is as it was (only the library's NullHandler)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # each case warns, not only the first (Python shows a warning once)
        assert main([*flags, "plugins"]) == 0
    out, err = capsys.readouterr()
    assert "observer" not in out and "sliminfer: warning: plugin 'no_such_plugin'" not in out
    assert ("sliminfer: info: loaded plugin 'observer' (slimtest_cli_observer)" in err) is info
    assert ("sliminfer: warning: " in err and "blocking it does nothing" in err) is warning
    package = logging.getLogger("sliminfer")
    assert package.level == logging.NOTSET
    assert all(isinstance(handler, logging.NullHandler) for handler in package.handlers)


def test_log_levels_of_the_flags() -> None:
    assert [log_level(n, quiet=False) for n in range(4)] == [logging.WARNING, logging.INFO, logging.DEBUG,
                                                            logging.DEBUG]
    assert log_level(0, quiet=True) == logging.ERROR


def test_verbose_and_quiet_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["-v", "-q", "plugins"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_config_validate_and_show(capsys) -> None:
    assert main(["config", "validate", "llama-3.1-8b"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["config", "show", "smollm2-135m", "generation.max_new_tokens=7"]) == 0
    assert "max_new_tokens: 7" in capsys.readouterr().out


def test_config_error_exits_2_and_names_the_field(capsys) -> None:
    assert main(["config", "validate", "llama-3.1-8b", "pruning.schedule.budgets=[8192,4000,2048]"]) == 2
    err = capsys.readouterr().err
    assert "pruning.schedule.budgets" in err and "4000" in err and "multiple of the block size 64" in err


def test_plugins_lists_builtins_and_fields(capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("token_unit", "attention_unit", "fixed", "ratio", "gpu",
                 "llama", "qwen2", "qwen3", "mistral", "phi3", "gemma"):
        assert name in out
    assert "budgets:" in out


def test_plugins_lists_the_installed_example_plugin(capsys) -> None:
    pytest.importorskip("sliminfer_plugin_example")
    from sliminfer.core.registry import reset_registry

    reset_registry()
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "key_norm" in out and "[from example]" in out


def test_run_with_missing_prompt_file(tmp_path, capsys) -> None:
    assert main(["run", "origin", "--prompt-file", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


@pytest.mark.real_weights
def test_demo_prints_its_table(capsys) -> None:
    assert main(["demo", "--tokens", "700", "--depth", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "origin" in out and "sliminfer" in out and "TTFT" in out and "tokens kept per layer" in out


@pytest.mark.real_weights
def test_run_prints_answer_and_stats(capsys) -> None:
    assert main(["run", "smollm2-135m", "generation.max_new_tokens=12", "--prompt",
                 "What is the capital of France?"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out and "prompt tokens" in out


@pytest.mark.real_weights
@pytest.mark.parametrize("preset", ["smollm2-135m", "smollm2-135m-offload-attn"])
def test_run_fast_gives_the_same_answer(preset: str, capsys) -> None:
    """--fast: the static decode (the offload manager's own one for the offload preset)."""
    args = ["run", preset, "generation.max_new_tokens=12", "--prompt", "What is the capital of France?"]
    assert main(args) == 0
    eager = capsys.readouterr().out.split("\n[")[0]
    assert main([*args, "--fast"]) == 0
    assert capsys.readouterr().out.split("\n[")[0] == eager
