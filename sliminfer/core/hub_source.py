"""Hugging Face Hub model ids as ``model.source``, resolved through the Hugging Face cache.

A source that is no local path but reads as a Hub repo id (``org/name``, or a bare ``name``) is found the
way transformers finds it: in the Hugging Face cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``), in the ``models--org--name/snapshots/<commit>/`` folder that
``models--org--name/refs/main`` names. With ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set, only the
cache is read, and a model that is not there is a ConfigError naming the id and the cache folder.
Online, huggingface_hub downloads what is missing, in two steps so that a model sliminfer refuses costs
no weights: first the small files (config, generation config, tokenizer, the safetensors index), which the
loader checks (architecture, sliding window, the config's layer indices); then transformers'
``from_pretrained`` fetches the weights it needs, pinned to the commit whose config was checked.

The environment is read when a model is resolved, not when huggingface_hub was imported, so a script
or notebook that sets ``HF_HUB_OFFLINE`` or ``HF_HUB_CACHE`` in ``os.environ`` before loading is obeyed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sliminfer.core.errors import ConfigError

#: the files fetched before the weights: configs, tokenizers (JSON, sentencepiece ``.model``, BPE
#: ``merges.txt`` / ``vocab.txt``, tiktoken), chat templates and the safetensors index
SMALL_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class HubSnapshot:
    """A Hub model's cached snapshot: ``path`` holds its config and tokenizer files; the weights load
    through :meth:`weights_options` (the same commit, from the same cache, offline if offline)."""

    repo_id: str
    path: Path
    cache_dir: Path
    offline: bool

    @property
    def commit(self) -> str:
        """The snapshot folder's name is its commit hash."""
        return self.path.name

    def weights_options(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained(repo_id, ...)`` for this snapshot's weights."""
        return {"revision": self.commit, "cache_dir": str(self.cache_dir), "local_files_only": self.offline}


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a Hub repo id (``org/name`` or ``name``: word characters, ``-``, ``.``)
    by huggingface_hub's own rule; paths such as ``./model``, ``~/model`` or ``/models/x`` do not."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def hub_offline() -> bool:
    """Offline mode, as huggingface_hub read it at import or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(name, "").upper() in constants.ENV_VARS_TRUE_VALUES for name in OFFLINE_VARIABLES)


def hub_cache_dir() -> Path:
    """``HF_HUB_CACHE`` as the environment says now, else the cache huggingface_hub chose at import."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def resolve_hub_id(repo_id: str, download: bool = True) -> HubSnapshot:
    """The cached snapshot of ``repo_id``'s main revision, its small files downloaded first where the
    Hub may be reached (online and ``download``); a ConfigError on ``model.source`` that names the id
    and the cache folder when it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    offline = hub_offline()
    cache = hub_cache_dir()
    where = f"the Hugging Face cache {cache} (HF_HUB_CACHE)"
    fix = (f"download it into {cache} once with network access (e.g. `hf download {repo_id}`), point HF_HUB_CACHE at a "
           "cache that holds it, or give a local checkpoint directory")
    try:
        path = snapshot_download(repo_id, cache_dir=cache, allow_patterns=list(SMALL_FILES),
                                 local_files_only=offline or not download)
    except RepositoryNotFoundError as exc:
        raise ConfigError("model.source", repo_id, "is neither a local directory nor a model on the Hugging Face "
                          "Hub (a private or gated model needs `hf auth login` and, if gated, its terms accepted): "
                          f"{_reason(exc)}") from exc
    except LocalEntryNotFoundError as exc:
        if offline:
            why = f"offline mode is on ({' / '.join(OFFLINE_VARIABLES)}) and it is not in {where}"
        elif not download:
            why = f"it is not in {where}, and nothing is downloaded here"
        else:
            why = f"the Hugging Face Hub could not be reached ({_reason(exc)}) and it is not in {where}"
        raise ConfigError("model.source", repo_id, f"is a Hugging Face Hub model id, but {why}; {fix}") from exc
    except OSError as exc:  # huggingface_hub's HTTP errors are OSErrors too
        raise ConfigError("model.source", repo_id, f"is a Hugging Face Hub model id that could not be fetched "
                          f"into {where}: {_reason(exc)}") from exc
    return HubSnapshot(repo_id, Path(path), cache, offline)


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message (huggingface_hub's run over several)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
