"""The package's import graph has no cycle, counting function-level (lazy) imports too.

Every module under ``sliminfer/`` is parsed with :mod:`ast`; each ``import a.b.c``, ``from a.b import c``
and relative ``from . import x`` / ``from ..core import y`` anywhere in it (module level or inside a
function) is an edge to the sliminfer module it names, and so is ``importlib.import_module`` with a
literal or f-string name (an import by a name held in a variable is refused: no graph can follow it).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.

Left out: imports under ``if TYPE_CHECKING:`` (never executed; they let an annotation name a class of a
higher layer), and the implicit edges to parent packages (importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__``): every module would otherwise "depend on" ``sliminfer/__init__.py``, which re-exports
the public API from everything and is the top of the graph.

A lazy import that only exists to dodge a cycle is still a cycle: the two modules cannot be understood,
tested or loaded one without the other. Cycles known and owned elsewhere are listed, each with the issue
that removes it, in :data:`KNOWN_CYCLES`; the test fails on any other cycle, and also once a known one is
gone (so the list cannot outlive the cycle it excuses).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = "sliminfer"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: the only cycles allowed, as the sorted set of modules they run through, with what removes them
KNOWN_CYCLES: dict[frozenset[str], str] = {}

#: modules that implement a concrete strategy or adapter: the extension API and the registry must not reach them
CONCRETE = {
    "sliminfer.builtins",
    "sliminfer.cache.gpu_resident",
    "sliminfer.cache.offload",
    "sliminfer.cache.offload.manager",
    "sliminfer.models.gemma",
    "sliminfer.models.llama",
    "sliminfer.models.mistral",
    "sliminfer.models.phi3",
    "sliminfer.models.qwen",
    "sliminfer.strategies.attention_unit",
    "sliminfer.strategies.dense_attention",
    "sliminfer.strategies.token_unit",
    "sliminfer.strategies.fixed_schedule",
    "sliminfer.strategies.ratio_schedule",
    "sliminfer.strategies.snapkv",
    "sliminfer.strategies.last_token",
    "sliminfer.strategies.gemfilter",
    "sliminfer.strategies.sparse_attention",
    "sliminfer.strategies.sparse_attention.blocks",
    "sliminfer.strategies.sparse_attention.estimate",
    "sliminfer.strategies.sparse_attention.kernel",
    "sliminfer.strategies.sparse_attention.strategy",
}


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``'s)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every import statement and ``importlib.import_module(...)`` call, at any depth, except under
    ``if TYPE_CHECKING:`` (annotations only: never executed, so no import order depends on them)."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
        )):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _dynamic_target(call: ast.Call) -> str | None:
    """The name an ``import_module`` call loads, as a regular expression: a literal string, or an f-string
    whose holes match one dotted component each. Anything else (a name from a variable, which is how the
    registry's import strings once hid a cycle) cannot be followed: None."""
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return re.escape(arg.value)
    if isinstance(arg, ast.JoinedStr) and all(
        isinstance(v, ast.FormattedValue) or (isinstance(v, ast.Constant) and isinstance(v.value, str))
        for v in arg.values
    ):
        return "".join(r"[^.]+" if isinstance(v, ast.FormattedValue) else re.escape(v.value) for v in arg.values)
    return None


def imported_names(module: str, path: Path, modules: Iterable[str] = (), unfollowed: list[str] | None = None) -> set[str]:
    """The dotted names the imports of ``module`` load, wherever in the file they stand: ``a.b.c`` for
    ``import a.b.c``; for ``from x import a``, ``x.a`` (a module if ``a`` is a submodule, else a name
    that :func:`build_graph` maps back to ``x``); for ``import_module(f"x.{n}_cmd")``, each of
    ``modules`` that the pattern matches. An import by a computed name is appended to ``unfollowed``."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                if node.level - 1 >= len(package):
                    raise AssertionError(f"{path}: relative import beyond the top-level package")
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names.update(target if alias.name == "*" else f"{target}.{alias.name}" for alias in node.names)
        else:
            target = _dynamic_target(node)
            if target is None:
                if unfollowed is not None:
                    unfollowed.append(f"{module}:{node.lineno}")
                continue
            names.update(name for name in modules if re.fullmatch(target, name))
    return names


def build_graph(modules: dict[str, Path], unfollowed: list[str] | None = None) -> dict[str, set[str]]:
    """module -> the package modules it imports (the nearest existing module for ``a.b.name``); imports
    by a computed name, which no graph can follow, go to ``unfollowed`` as ``module:line``."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for name in imported_names(module, path, modules, unfollowed):
            if name.partition(".")[0] != module.partition(".")[0]:
                continue  # another distribution's module
            while name not in modules:  # ``pkg.mod.Class`` -> ``pkg.mod``
                name = name.rpartition(".")[0]
            if name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the component's first module, as a path ``a -> b -> ... -> a``."""
    members, start = set(component), component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first, so the path printed is a shortest one
        nxt = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if succ not in parents:
                    parents[succ] = node
                    nxt.append(succ)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    return f"{len(component)} modules ({', '.join(component)}), e.g. {' -> '.join(cycle_path(graph, component))}"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for succ in graph[todo.pop()]:
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph(module_files())


def test_no_import_by_computed_name() -> None:
    """``importlib.import_module(name)`` with a name held in a variable hides an edge from this test (the
    registry's ``_BASES`` strings hid its cycle so); only literal and f-string names are followed."""
    unfollowed: list[str] = []
    build_graph(module_files(), unfollowed)
    assert not unfollowed, f"imports by a computed name: {unfollowed}"


def test_no_import_cycle(graph) -> None:
    cycles = strongly_connected(graph)
    unexpected = [c for c in cycles if frozenset(c) not in KNOWN_CYCLES]
    assert not unexpected, "import cycles (lazy imports counted):\n" + "\n".join(describe(graph, c) for c in unexpected)


@pytest.mark.parametrize("cycle", sorted(KNOWN_CYCLES, key=sorted), ids=lambda c: "<->".join(sorted(c)))
def test_known_cycle_still_listed_for_a_reason(graph, cycle) -> None:
    """A known cycle is an expected failure (xfail, with its reason) while it exists exactly as listed;
    once it is gone this fails, so the allow-list entry has to be removed with it. A known cycle that grew
    (another module joined it) no longer matches its entry and fails :func:`test_no_import_cycle`."""
    cycles = [frozenset(c) for c in strongly_connected(graph)]
    if cycle in cycles:
        pytest.xfail(KNOWN_CYCLES[cycle])
    pytest.fail(f"the known cycle {sorted(cycle)} is gone: remove it from KNOWN_CYCLES")


@pytest.mark.parametrize("module", ["sliminfer.core.strategy", "sliminfer.core.registry", "sliminfer.core.config",
                                    "sliminfer.core.sections", "sliminfer.core.hooks", "sliminfer.strategies.base",
                                    "sliminfer.strategies.attention", "sliminfer.strategies.prompt_filter",
                                    "sliminfer.cache.base", "sliminfer.models.base", "sliminfer.testing"])
def test_extension_api_knows_no_concrete_strategy(graph, module) -> None:
    """The registry, the base classes and the conformance kit (which names its partner strategies in the
    registry) reach no concrete strategy, even through a lazy import."""
    assert not (reachable(graph, module) & CONCRETE), sorted(reachable(graph, module) & CONCRETE)


def test_concrete_list_covers_the_builtins(graph) -> None:
    """Each module the built-ins import (but the registry's API) is in :data:`CONCRETE`, so a new
    built-in strategy is checked above too."""
    assert graph["sliminfer.builtins"] - {"sliminfer.core.registry"} <= CONCRETE


def test_library_does_not_import_its_testing_kit(graph) -> None:
    """``sliminfer.testing`` (tiny models, the reference, the conformance kit) is imported by tests only."""
    users = {m for m, edges in graph.items() if not m.startswith("sliminfer.testing")
             and any(e == "sliminfer.testing" or e.startswith("sliminfer.testing.") for e in edges)}
    assert not users, sorted(users)


def test_no_module_imports_pytest() -> None:
    """Not even the testing kit, lazily: a plugin's test suite may use any runner."""
    modules = module_files()
    users = {m for m, path in modules.items()
             if any(name.partition(".")[0] in ("pytest", "_pytest") for name in imported_names(m, path, modules))}
    assert not users, sorted(users)


def test_strategy_module_is_a_leaf(graph) -> None:
    """The extension API's base class imports nothing else of sliminfer."""
    assert graph["sliminfer.core.strategy"] == set()


def test_registry_and_config_do_not_import_each_other(graph) -> None:
    """The registry names the base classes by import, not by string (which hid the cycle), and the config
    schema does not reach for the registry (the strategy checks live above both, in the pipeline and its
    preflight)."""
    assert "sliminfer.core.config" in graph["sliminfer.core.registry"]
    assert "sliminfer.core.registry" not in reachable(graph, "sliminfer.core.config")
    assert {"sliminfer.strategies.base", "sliminfer.strategies.attention", "sliminfer.strategies.prompt_filter",
            "sliminfer.cache.base", "sliminfer.models.base"} <= graph["sliminfer.core.registry"]


def test_registry_imports_alone_without_concrete_strategies() -> None:
    """In a fresh interpreter, importing the registry module loads no concrete strategy module (the
    package's ``__init__`` runs first, so this also holds for ``import sliminfer``), and the built-ins
    are all there on first use."""
    code = (
        "import json, sys\n"
        "import sliminfer.core.registry as r\n"
        f"loaded = sorted(m for m in {sorted(CONCRETE)!r} if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print(json.dumps({kind: sorted(entries) for kind, entries in r.get_registry().entries.items()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"token_unit", "attention_unit"} <= set(entries["scorer"])  # installed plugins may add more
    assert {"fixed", "ratio"} <= set(entries["schedule"])
    assert {"gpu", "offload"} <= set(entries["cache"])
    assert {"dense", "flexprefill", "minference"} <= set(entries["attention"])
    assert {"llama", "qwen2", "qwen3"} <= set(entries["adapter"])


def test_registry_takes_the_builtins_it_is_given() -> None:
    """The registry works with whatever built-in plugin it is handed (it knows none itself)."""
    from sliminfer.core.registry import BUILTINS, KINDS, Registry, hookimpl
    from sliminfer.strategies.token_unit import TokenUnitScorer

    class Builtins:
        @hookimpl
        def sliminfer_register(self, register) -> None:
            register.scorer("only", TokenUnitScorer)

    registry = Registry(load_entry_points=False, builtins=Builtins())
    assert {kind: sorted(entries) for kind, entries in registry.entries.items()} == {
        kind: ["only"] if kind == "scorer" else [] for kind in KINDS}
    assert registry.get("scorer", "only").plugin == BUILTINS


# the detector itself ------------------------------------------------------------------------------------
def test_detector_finds_lazy_relative_and_dotted_cycles(tmp_path) -> None:
    """A lazy relative import closing a cycle, ``import a.b.c`` and ``from . import x`` are all edges."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("import pkg.sub.leaf\nfrom .b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from . import a  # lazy: still a cycle\n")
    (pkg / "c.py").write_text("from pkg.sub import leaf\n")
    (pkg / "sub" / "deep.py").write_text("def f():\n    from ..c import leaf\n    from .leaf import X\n")
    graph = build_graph(module_files(pkg, "pkg"))
    assert graph["pkg.a"] == {"pkg.sub.leaf", "pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.deep"] == {"pkg.c", "pkg.sub.leaf"}
    cycles = strongly_connected(graph)
    assert cycles == [["pkg.a", "pkg.b"]]
    assert describe(graph, cycles[0]) == "2 modules (pkg.a, pkg.b), e.g. pkg.a -> pkg.b -> pkg.a"


def test_detector_follows_import_module_and_reports_computed_names(tmp_path) -> None:
    """``import_module`` with a literal or f-string is an edge; with a variable it is reported (it would
    hide an edge, as the registry's ``_BASES`` strings hid its cycle); ``if TYPE_CHECKING:`` is no edge."""
    pkg = tmp_path / "pkg"
    (pkg / "cmds").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cmds" / "__init__.py").write_text("")
    (pkg / "cmds" / "a_cmd.py").write_text("")
    (pkg / "cmds" / "b_cmd.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.main\n")
    (pkg / "main.py").write_text(
        "import importlib\ndef f(n):\n    importlib.import_module(f'pkg.cmds.{n}_cmd')\n    importlib.import_module('pkg.cmds')\n"
    )
    graph = build_graph(module_files(pkg, "pkg"))
    assert graph["pkg.main"] == {"pkg.cmds", "pkg.cmds.a_cmd", "pkg.cmds.b_cmd"}
    assert graph["pkg.cmds.b_cmd"] == set()
    (pkg / "bad.py").write_text("import importlib\nNAME = 'pkg.main'\nimportlib.import_module(NAME)\n")
    unfollowed: list[str] = []
    build_graph(module_files(pkg, "pkg"), unfollowed)
    assert unfollowed == ["pkg.bad:3"]
