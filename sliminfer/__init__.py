"""sliminfer: fast long-context inference by pruning prompt tokens' hidden states mid-model (SlimInfer).

Importing the package loads no plugin and touches no GPU; the registry is built on first use.
"""

from sliminfer.cache.memory import GPUOutOfMemoryError
from sliminfer.core.config import SlimConfig, load_config
from sliminfer.core.errors import ConfigError, InputError, SlimInferError, UnknownNameError, UnsupportedModelError
from sliminfer.core.pipeline import SlimPipeline
from sliminfer.core.registry import Register, get_registry, hookimpl
from sliminfer.core.results import GenerationResult, PrefillResult

__version__ = "0.1.0"

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
