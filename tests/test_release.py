"""Release hygiene: one version source."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

import sliminfer

REPO = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_is_the_installed_distributions() -> None:
    assert sliminfer.__version__ == importlib.metadata.version("sliminfer")


def test_pyproject_takes_the_version_from_the_package() -> None:
    """The version is written once: pyproject declares it dynamic, read from ``sliminfer.__version__``,
    which must be a plain string assignment so setuptools reads it without importing sliminfer (and torch)."""
    config = _pyproject()
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sliminfer.__version__"}
    module = ast.parse((REPO / "sliminfer" / "__init__.py").read_text(encoding="utf-8"))
    literals = [node.value.value for node in module.body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant)]
    assert literals == [sliminfer.__version__]
