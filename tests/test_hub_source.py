"""Hugging Face Hub ids as ``model.source``: found in a Hugging Face cache laid out on disk (the
``models--org--name/snapshots/<commit>/`` + ``refs/main`` layout, a tiny model saved with save_pretrained),
offline mode honoured (``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE``), a clear error for an id that is not
there, local directories first. Nothing here reaches past the loopback address: online cases point the
Hub endpoint at a closed local port."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sliminfer import ConfigError, SlimPipeline, UnsupportedModelError
from sliminfer.cli.main import main
from sliminfer.testing.tiny_models import random_prompt, tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "tiny-org/tiny-phi3"
CPU = {"model": {"dtype": "float32", "device": "cpu"}}


def _cache_model(cache: Path, repo: str, model: torch.nn.Module) -> Path:
    """Lay ``model`` out in ``cache`` as huggingface_hub stores a download of ``repo``'s main revision."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An HF_HUB_CACHE in tmp_path holding a tiny Phi-3 as ``tiny-org/tiny-phi3``; offline variables unset,
    and the Hub endpoint a closed loopback port, so no case can reach the network."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    _cache_model(cache, REPO, tiny_model("phi3", seed=1))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    return cache


def _same_model(pipe: SlimPipeline, model: torch.nn.Module) -> None:
    """``pipe`` holds ``model``'s architecture and weights, and runs it as the in-memory one runs."""
    assert type(pipe.model) is type(model)
    loaded = pipe.model.state_dict()
    assert all(torch.equal(value, loaded[name]) for name, value in model.state_dict().items())
    ids = random_prompt(120)
    gap = (pipe.prefill(ids).logits - SlimPipeline.from_pretrained(model).prefill(ids).logits).abs().max().item()
    assert gap <= 1e-5


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_a_hub_id_loads_from_the_cache(hub_cache, monkeypatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    pipe = SlimPipeline.from_pretrained(REPO, config=CPU)
    _same_model(pipe, tiny_model("phi3", seed=1))
    assert pipe.tokenizer is None  # the cached checkpoint has no tokenizer files


def test_offline_an_id_not_in_the_cache_names_the_id_and_the_cache(hub_cache, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        SlimPipeline.from_pretrained("tiny-org/absent", config=CPU)
    message = str(info.value)
    assert info.value.field == "model.source" and info.value.value == "tiny-org/absent"
    assert "offline mode is on" in message and f"not in the Hugging Face cache {hub_cache}" in message
    assert "hf download tiny-org/absent" in message


def test_online_with_the_hub_unreachable_the_cache_serves(hub_cache) -> None:
    """As transformers does: a Hub that cannot be reached falls back to the cached snapshot; an id that is
    not cached then says the Hub could not be reached."""
    _same_model(SlimPipeline.from_pretrained(REPO, config=CPU), tiny_model("phi3", seed=1))
    with pytest.raises(ConfigError, match=r"model.source: got 'tiny-org/absent'; .*Hub could not be reached .*"
                                          rf"not in the Hugging Face cache {hub_cache}"):
        SlimPipeline.from_pretrained("tiny-org/absent", config=CPU)


def test_a_binding_window_is_refused_before_the_weights(hub_cache, monkeypatch) -> None:
    """The adapter's checks read the snapshot's config.json: a model sliminfer refuses costs no weights
    (online, none would be downloaded)."""
    from transformers import AutoModelForCausalLM

    _cache_model(hub_cache, "tiny-org/windowed", tiny_model("mistral", sliding_window=16))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(UnsupportedModelError, match="mistral: sliding_window=16 "):
        SlimPipeline.from_pretrained("tiny-org/windowed", config=CPU)


def test_a_local_directory_wins_over_a_hub_id_of_the_same_name(hub_cache, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    local = tiny_model("mistral", seed=2)
    local.save_pretrained(tmp_path / REPO)  # ./tiny-org/tiny-phi3, a Mistral
    _same_model(SlimPipeline.from_pretrained(REPO, config=CPU), local)


@pytest.mark.parametrize("source", ["./no/such/dir", "/no/such/dir", "~/no-such-dir/x", "a/b/c"])
def test_neither_a_directory_nor_a_hub_id(hub_cache, source: str) -> None:
    with pytest.raises(ConfigError) as info:
        SlimPipeline.from_pretrained(source, config=CPU)
    assert str(info.value).startswith(f"model.source: got {source!r}; must be a local Hugging Face checkpoint "
                                      "directory containing config.json, a Hugging Face Hub model id ('org/name'")


def test_an_empty_source_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="model.source: got ''"):
        SlimPipeline.from_config("origin", **{"model.source": ""})


def test_config_validate_checks_a_cached_hub_model_and_downloads_nothing(hub_cache, capsys) -> None:
    """Online (the endpoint unreachable): validation reads the cache only, for a cached id and an absent one."""
    assert main(["config", "validate", "origin", f"model.source={REPO}"]) == 0
    assert f"checked against {REPO} (phi3, 6 layers)" in capsys.readouterr().out
    assert main(["config", "validate", "smollm2-135m", f"model.source={REPO}"]) == 2  # its layers 17.. are past 6
    assert "pruning.schedule.layers: got 17" in capsys.readouterr().err
    assert main(["config", "validate", "origin", "model.source=tiny-org/absent"]) == 0
    out = capsys.readouterr().out
    assert "model checks skipped: model.source: got 'tiny-org/absent'" in out and "nothing is downloaded here" in out
