"""Broken and blocked plugins: each failure names the plugin and how to skip it, and nothing leaks.

Entry points are simulated without installing anything: each case writes its plugin modules into a
folder put on ``sys.path`` and a ``*.dist-info`` folder (kept off ``sys.path``) declaring them, and
the registry's one listing seam, ``plugin_entry_points``, returns that distribution's entry points,
so the distribution's name shows in the messages as a real one would.

Decision tested here: an entry point whose target defines none of the sliminfer hooks is a
PluginError (its entry point names the wrong module, so its strategies would otherwise be missing
with no hint why); one that defines only observer hooks is a valid plugin.
"""

from __future__ import annotations

import sys
import textwrap
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PathDistribution
from pathlib import Path

import pytest

from sliminfer import load_config
from sliminfer.cli.main import main
from sliminfer.core import registry as registry_module
from sliminfer.core.errors import ConfigError
from sliminfer.core.registry import BLOCK_ENV, PluginError, Registry, get_registry, reset_registry

MODULE_PREFIX = "slimtest_"
DISTRIBUTION = "sliminfer-plugin-broken"

IMPORT_ERROR = "from sliminfer import no_such_name\n"
REGISTER_RAISES = """\
from types import SimpleNamespace
from sliminfer import hookimpl

@hookimpl
def _register(register):
    raise RuntimeError("probing the GPU failed")

hooks = SimpleNamespace(sliminfer_register=_register)
"""
NO_HOOK = "VALUE = 1  # defines no sliminfer hook: the entry point names the wrong module\n"
BAD_HOOK_ARGS = """\
from sliminfer import hookimpl

@hookimpl
def sliminfer_register(register, device):
    pass
"""
NOT_A_SCORER = """\
from sliminfer import hookimpl

@hookimpl
def sliminfer_register(register):
    register.scorer("bad", object)
"""
GOOD = """\
from sliminfer import hookimpl
from sliminfer.strategies.base import Scorer, ScorerConfig

class GoodScorer(Scorer):
    '''A scorer from a plugin that loads.'''
    Config = ScorerConfig

    def score_blocks(self, queries, keys): ...

@hookimpl
def sliminfer_register(register):
    register.scorer("good_scorer", GoodScorer)
"""
HALF_REGISTERS = GOOD.replace(
    'register.scorer("good_scorer", GoodScorer)',
    'register.scorer("half_scorer", GoodScorer)\n    raise ValueError("the second scorer is missing")',
)
OBSERVER_ONLY = """\
from sliminfer import hookimpl

@hookimpl
def sliminfer_prune(event):
    pass
"""

# entry-point name -> (target, module source); the module is named by the target's part before ":"
BROKEN = {"broken": (f"{MODULE_PREFIX}broken", IMPORT_ERROR)}
WORKING = {"good": (f"{MODULE_PREFIX}good", GOOD)}


@dataclass(frozen=True)
class Case:
    id: str
    plugins: dict[str, tuple[str, str]]
    block: str | None = None
    raises: type[Exception] | None = None
    says: tuple[str, ...] = ()  # substrings of the exception's message
    warns: tuple[str, ...] = ()  # substrings of the one warning expected
    scorers: tuple[str, ...] = ()  # scorers that must be registered when nothing raises


HINT = f"set {BLOCK_ENV}=broken to skip it"
CASES = [
    Case("import_error", BROKEN, raises=PluginError, says=(
        "plugin 'broken'", f"entry point '{MODULE_PREFIX}broken'", f"distribution '{DISTRIBUTION}'",
        "ImportError: cannot import name 'no_such_name' from 'sliminfer'", HINT)),
    Case("register_raises", {"broken": (f"{MODULE_PREFIX}raises:hooks", REGISTER_RAISES)}, raises=PluginError,
         says=(f"entry point '{MODULE_PREFIX}raises:hooks'", "RuntimeError: probing the GPU failed", HINT)),
    Case("no_hook", {"broken": (f"{MODULE_PREFIX}nohook", NO_HOOK)}, raises=PluginError, says=(
        f"'{MODULE_PREFIX}nohook' defines none of the sliminfer hooks (sliminfer_register, sliminfer_prefill_start",
        "point the entry point at the module that does", HINT)),
    Case("hook_with_unknown_argument", {"broken": (f"{MODULE_PREFIX}badargs", BAD_HOOK_ARGS)}, raises=PluginError,
         says=("PluginValidationError: Plugin 'broken' for hook 'sliminfer_register'", "device", HINT)),
    Case("registers_a_non_scorer", {"broken": (f"{MODULE_PREFIX}notscorer", NOT_A_SCORER)}, raises=PluginError,
         says=("SlimInferError: plugin 'broken' registered scorer 'bad' as", "not a Scorer", HINT)),
    Case("hint_keeps_names_already_blocked", {**BROKEN, "other": (f"{MODULE_PREFIX}other", GOOD)}, block="other",
         raises=PluginError, says=(f"set {BLOCK_ENV}=other,broken to skip it",)),
    Case("block_builtins", WORKING, block="sliminfer.builtins", raises=ConfigError, says=(
        f"{BLOCK_ENV}: got 'sliminfer.builtins'", "the built-in strategies ('sliminfer.builtins') cannot be blocked",
        "blockable entry-point plugins: good (or '*' for all of them)")),
    Case("block_builtins_alias", {}, block="example, builtins", raises=ConfigError, says=(
        f"{BLOCK_ENV}: got 'example, builtins'", "cannot be blocked", "none: no entry-point plugin is installed")),
    Case("blocked_broken_plugin_loads_nothing", {**BROKEN, **WORKING}, block="broken", scorers=("good_scorer",)),
    Case("block_all", {**BROKEN, **WORKING}, block="*", scorers=("token_unit",)),
    Case("unknown_blocked_name_warns", {**BROKEN, **WORKING}, block="brokn,broken", scorers=("good_scorer",),
         warns=(f"{BLOCK_ENV}: unknown plugin 'brokn'. Did you mean 'broken'? Available: broken, good",
                "blocking it does nothing")),
    Case("observer_only_plugin_loads", {"watch": (f"{MODULE_PREFIX}watch", OBSERVER_ONLY)}, scorers=("token_unit",)),
]


@pytest.fixture(autouse=True)
def fresh_registry():
    """The process-wide registry and the plugin modules never outlive a test, broken or not."""
    reset_registry()
    yield
    reset_registry()
    for name in [name for name in sys.modules if name.startswith(MODULE_PREFIX)]:
        del sys.modules[name]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``install(plugins, block)``: make the registry see exactly ``plugins``, with ``block`` in the env."""

    def install(plugins: dict[str, tuple[str, str]], block: str | None = None) -> list[EntryPoint]:
        declared = declare(tmp_path, plugins)
        monkeypatch.syspath_prepend(str(tmp_path / "src"))
        monkeypatch.setattr(registry_module, "plugin_entry_points", lambda: declared)
        if block is None:
            monkeypatch.delenv(BLOCK_ENV, raising=False)
        else:
            monkeypatch.setenv(BLOCK_ENV, block)
        return declared

    return install


def declare(root: Path, plugins: dict[str, tuple[str, str]]) -> list[EntryPoint]:
    """Write the modules under ``root/src`` and a dist-info declaring them; its ``sliminfer`` entry points."""
    (root / "src").mkdir(exist_ok=True)
    for target, source in plugins.values():
        (root / "src" / f"{target.split(':')[0]}.py").write_text(textwrap.dedent(source))
    meta = root / "meta" / "sliminfer_plugin_broken-0.1.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, (target, _) in plugins.items()]
    (meta / "entry_points.txt").write_text("\n".join(["[sliminfer]", *lines, "[console_scripts]", "x = y:z", ""]))
    return list(PathDistribution(meta).entry_points.select(group="sliminfer"))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_broken_or_blocked_plugins(case: Case, install) -> None:
    install(case.plugins, case.block)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.raises is None:
            registry = get_registry()
        else:
            with pytest.raises(case.raises) as info:
                get_registry()
    messages = [str(w.message) for w in caught if BLOCK_ENV in str(w.message)]
    assert len(messages) == (1 if case.warns else 0), messages
    for part in case.warns:
        assert part in messages[0]
    if case.raises is not None:
        message = str(info.value)
        for part in case.says:
            assert part in message
        assert "\n" not in message
        return
    for scorer in case.scorers:
        registry.get("scorer", scorer)
    assert not registry.broken and "broken" not in registry.pm.list_name_plugin()
    load_config("origin")  # config validation works


@pytest.mark.parametrize("case", [c for c in CASES if c.raises is PluginError], ids=lambda c: c.id)
def test_plugin_error_keeps_the_cause_and_is_raised_on_every_lookup(case: Case, install) -> None:
    install(case.plugins, case.block)
    with pytest.raises(PluginError) as first:
        get_registry()
    with pytest.raises(PluginError) as again:
        load_config("origin")  # config validation goes through the registry too
    assert again.value is first.value
    cause = first.value.__cause__
    if case.id == "no_hook":
        assert cause is None
    else:
        assert cause is not None and type(cause).__name__ in str(first.value)


def test_a_plugin_failing_midway_registers_nothing(install) -> None:
    install({"broken": (f"{MODULE_PREFIX}half", HALF_REGISTERS), **WORKING})
    registry = Registry(allow_broken=True)
    assert [error.name for error in registry.broken] == ["broken"]
    assert "ValueError: the second scorer is missing" in str(registry.broken[0])
    assert "half_scorer" not in registry.entries["scorer"]
    assert registry.get("scorer", "good_scorer").plugin == "good"  # the other plugin still loaded
    assert "broken" not in registry.pm.list_name_plugin()
    with pytest.raises(PluginError, match="'broken'"):
        Registry()  # direct construction refuses by default, as get_registry does


def test_entry_points_come_from_the_declared_sliminfer_group_only(tmp_path: Path, monkeypatch) -> None:
    """The seam the other tests replace: a real dist-info on ``sys.path``, only its ``sliminfer`` group."""
    declare(tmp_path, BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.syspath_prepend(str(tmp_path / "meta"))
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    declared = {(ep.name, ep.value, ep.dist.name) for ep in registry_module.plugin_entry_points()}
    assert ("broken", f"{MODULE_PREFIX}broken", DISTRIBUTION) in declared
    assert all(name != "x" for name, _, _ in declared)  # its console script is not a plugin
    with pytest.raises(PluginError, match=f"plugin 'broken'.*distribution '{DISTRIBUTION}'"):
        get_registry()


# the command line -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    id: str
    argv: list[str]
    plugins: dict[str, tuple[str, str]]
    block: str | None
    rc: int
    out: tuple[str, ...] = ()
    err: tuple[str, ...] = ()


CLI_CASES = [
    CliCase("plugins_lists_the_broken_plugin", ["plugins"], {**BROKEN, **WORKING}, None, 1, out=(
        "token_unit", "good_scorer", "[from good]", "broken plugins (nothing from them is registered):",
        "  plugin 'broken'", "ImportError: cannot import name 'no_such_name'", HINT)),
    CliCase("config_validate_fails_on_one_line", ["config", "validate", "origin"], BROKEN, None, 2, err=(
        "sliminfer config: error: plugin 'broken'", f"distribution '{DISTRIBUTION}'", "ImportError", HINT)),
    CliCase("config_validate_with_the_broken_plugin_blocked", ["config", "validate", "origin"], BROKEN, "broken", 0,
            out=("origin: OK",)),
    CliCase("plugins_refuses_blocking_builtins", ["plugins"], WORKING, "builtins", 2, err=(
        f"sliminfer plugins: error: {BLOCK_ENV}: got 'builtins'", "cannot be blocked", "plugins: good")),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.id for case in CLI_CASES])
def test_cli_with_broken_or_blocked_plugins(case: CliCase, install, capsys) -> None:
    install(case.plugins, case.block)
    assert main(case.argv) == case.rc
    out, err = capsys.readouterr()
    for part in case.out:
        assert part in out
    for part in case.err:
        assert part in err
    assert "Traceback" not in out + err
    if case.err:
        assert err.count("\n") == 1 and not out  # one line, and no partial output
    else:
        assert not err
