"""sliminfer: fast long-context inference by pruning prompt tokens' hidden states mid-model (SlimInfer).

Importing the package loads no plugin and no concrete strategy, and touches no GPU; the registry is built on first use.
It registers the ``sliminfer-text-generation`` task of transformers' ``pipeline()``, lazily: see
:mod:`sliminfer.hf.registration`.
Its modules log through ``logging.getLogger(__name__)``; the package logger has only a NullHandler, so where
the records go is the application's choice (the ``sliminfer`` command shows them on stderr: ``-v``, ``-q``).
"""

import logging

from sliminfer.cache.memory import GPUOutOfMemoryError
from sliminfer.core import registry as _registry
from sliminfer.core.config import SlimConfig
from sliminfer.core.errors import (
    ConfigError,
    InputError,
    SlimInferError,
    UnknownNameError,
    UnsupportedModelError,
)
from sliminfer.core.pipeline import SlimPipeline, load_config
from sliminfer.core.registry import Register, get_registry, hookimpl
from sliminfer.core.results import GenerationResult, PrefillResult
from sliminfer.hf.registration import register_task as _register_pipeline_task


def _builtins() -> object:
    """The built-in strategies' plugin, imported when the first registry is built. The package wires it
    in, from the top of the import graph, so the registry never imports a concrete strategy."""
    from sliminfer import builtins

    return builtins


_registry.provide_builtins(_builtins)
_register_pipeline_task()

#: the one version source: pyproject.toml reads it (``[tool.setuptools.dynamic]``), so it is never written twice
__version__ = "0.1.0"

# a library leaves handlers to the application; this only stops Python's last-resort stderr output
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ConfigError",
    "GPUOutOfMemoryError",
    "GenerationResult",
    "InputError",
    "PrefillResult",
    "Register",
    "SlimConfig",
    "SlimInferError",
    "SlimPipeline",
    "UnknownNameError",
    "UnsupportedModelError",
    "get_registry",
    "hookimpl",
    "load_config",
]
