"""Registers the ``sliminfer-text-generation`` task in transformers' ``PIPELINE_REGISTRY``, without importing
``transformers.pipelines`` for it.

Why lazy: importing ``transformers.pipelines`` takes seconds (every pipeline, their auto classes), more
than the rest of ``import sliminfer``, and most users never call ``pipeline()``. So ``import sliminfer``
registers the task at once only when ``transformers.pipelines`` is already imported; otherwise it puts a
finder on ``sys.meta_path`` that leaves the import to the usual finders and registers the task right after
``transformers.pipelines`` has run, which is before anyone can call ``pipeline()``. The finder removes
itself at that moment. Both paths are idempotent: the task is registered once per process, a second
``register_task`` (or a re-import of sliminfer) does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

PIPELINES = "transformers.pipelines"


def register_task() -> None:
    """Make ``pipeline("sliminfer-text-generation", ...)`` work, now or when transformers' pipelines load."""
    if PIPELINES in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


def _register() -> None:
    from transformers import AutoModelForCausalLM
    from transformers.pipelines import PIPELINE_REGISTRY

    from sliminfer.hf.text_generation import TASK, SlimTextGenerationPipeline

    known = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if known is None or known.get("impl") is not SlimTextGenerationPipeline:
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=SlimTextGenerationPipeline,
                                            pt_model=AutoModelForCausalLM, type="text")


def _register_or_warn() -> None:
    """Registration inside someone else's import: a failure must not break ``import transformers.pipelines``,
    and must not pass unseen either."""
    try:
        _register()
    except Exception as exc:  # noqa: BLE001 - reported, and transformers' import goes on
        warnings.warn(f"sliminfer could not register the 'sliminfer-text-generation' pipeline task: "
                      f"{type(exc).__name__}: {exc}", stacklevel=2)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``transformers.pipelines`` through the other finders, and has it register the task once run."""

    def find_spec(self, fullname: str, path: Any,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != PIPELINES:
            return None
        sys.meta_path.remove(self)  # from here on the usual finders alone
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *_: None)(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenRegister(spec.loader)
                return spec
        return None


class _ThenRegister(importlib.abc.Loader):
    """A module's own loader, which registers the task once the module has run."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _register_or_warn()

    def __getattr__(self, name: str) -> Any:  # resource readers, get_filename, ...: the real loader's
        return getattr(self.loader, name)
