"""The persistent torch.compile cache: where inductor is pointed, and how a user keeps control."""

from __future__ import annotations

import os

import pytest

from sliminfer import ConfigError
from sliminfer.decode import compile_cache


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIMINFER_CACHE", str(tmp_path))
    monkeypatch.delenv("SLIMINFER_COMPILE_CACHE", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setattr(compile_cache, "_USER_DIR", None)
    monkeypatch.setattr(compile_cache, "_USER_TRITON_DIR", None)
    return monkeypatch, tmp_path


def test_inductor_caches_under_sliminfers_cache_folder(env) -> None:
    _monkeypatch, tmp_path = env
    path = compile_cache.use_compile_cache()
    assert path == tmp_path / "compile" and path.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(path)
    assert os.environ["TRITON_CACHE_DIR"] == str(path / "triton")  # Triton's kernels and autotune timings


def test_a_triton_cache_the_user_chose_wins(env) -> None:
    monkeypatch, tmp_path = env
    monkeypatch.setattr(compile_cache, "_USER_TRITON_DIR", "/triton/elsewhere")
    monkeypatch.setenv("TRITON_CACHE_DIR", "/triton/elsewhere")
    assert compile_cache.use_compile_cache() == tmp_path / "compile"
    assert os.environ["TRITON_CACHE_DIR"] == "/triton/elsewhere"


def test_switched_off_leaves_torch_alone(env) -> None:
    monkeypatch, tmp_path = env
    monkeypatch.setenv("SLIMINFER_COMPILE_CACHE", "0")
    assert compile_cache.use_compile_cache() is None
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and not (tmp_path / "compile").exists()
    assert "TRITON_CACHE_DIR" not in os.environ


def test_a_folder_the_user_chose_wins(env) -> None:
    monkeypatch, _tmp_path = env
    monkeypatch.setattr(compile_cache, "_USER_DIR", "/somewhere/else")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    assert compile_cache.use_compile_cache() is None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"


@pytest.mark.parametrize("value", ["yes", "2", "off"])
def test_a_bad_switch_is_refused_naming_the_variable(env, value: str) -> None:
    monkeypatch, _ = env
    monkeypatch.setenv("SLIMINFER_COMPILE_CACHE", value)
    with pytest.raises(ConfigError, match=f"SLIMINFER_COMPILE_CACHE: got '{value}'; allowed: 1 .* or 0"):
        compile_cache.use_compile_cache()


@pytest.mark.parametrize("autotune", [False, True])
def test_compile_static_asks_for_autotuning_only_when_told(env, autotune: bool) -> None:
    """``decode.autotune`` reaches torch.compile as inductor options (not the "max-autotune" mode, whose own
    CUDA graphs would nest in the decoder's), and the cache folder is set either way."""
    monkeypatch, tmp_path = env
    seen: dict[str, object] = {}
    monkeypatch.setattr(compile_cache.torch, "compile", lambda fn, **kwargs: seen.update(kwargs) or fn)
    compile_cache.compile_static(len, autotune)
    assert seen == {"dynamic": False, "options": compile_cache.AUTOTUNE_OPTIONS if autotune else None}
    assert "mode" not in seen and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile")
