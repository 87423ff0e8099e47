"""Release hygiene: one version source, a license that matches the package metadata, a changelog, and
documentation whose every repository path exists inside the repository."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest

import sliminfer

REPO = Path(__file__).resolve().parent.parent
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
CODE = re.compile(r"`([^`\s]+)`")
URL = re.compile(r"^([a-z][a-z0-9+.-]*:|#)")  # http:, mailto:, an anchor on the same page


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


def test_license_file_matches_the_metadata() -> None:
    assert _pyproject()["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_changelog_has_unreleased_and_the_current_version() -> None:
    """Keep a Changelog: an Unreleased section first, then released versions, newest first; the newest is
    the package's version, and the only subsections are the format's change types."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert versions[:2] == ["Unreleased", sliminfer.__version__]
    kinds = set(re.findall(r"^### (.+)$", text, re.MULTILINE))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _repository_paths(doc: Path) -> list[Path]:
    """The paths a markdown file points to in the repository: relative link targets (from the file's
    folder) and code spans that name a path from the repository root (``configs/x.yaml``, ``../y``)."""
    prose = FENCED.sub("", doc.read_text(encoding="utf-8"))
    links = [doc.parent / target.split("#")[0] for target in LINK.findall(prose) if not URL.match(target)]
    top = {entry.name for entry in REPO.iterdir()}
    spans = [REPO / span for span in CODE.findall(prose)
             if "/" in span and (span.startswith(("./", "../")) or span.split("/")[0] in top)]
    return links + spans


@pytest.mark.parametrize("doc", ["README.md", "docs/method.md", "CHANGELOG.md"])
def test_every_path_a_doc_names_is_in_the_repository(doc: str) -> None:
    paths = _repository_paths(REPO / doc)
    outside = [p for p in paths if not p.resolve().is_relative_to(REPO)]
    missing = [p for p in paths if not p.exists()]
    assert not outside and not missing, (outside, missing)


def test_readme_links_the_method_page() -> None:
    """The method's rules are linked inside the repository (they once pointed to a folder outside it)."""
    assert REPO / "docs" / "method.md" in _repository_paths(REPO / "README.md")
