"""An example third-party sliminfer plugin: the ``key_norm`` scorer and a pruning-decision observer.

sliminfer finds it through the ``sliminfer`` entry point ``example`` (see ``pyproject.toml``); the
hooks are in :mod:`sliminfer_plugin_example.plugin`. Importing this package imports nothing else.
"""

__version__ = "0.1.0"
