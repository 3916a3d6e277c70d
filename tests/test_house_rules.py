"""House rules of the layout: the router runs in both worlds, the simulator never needs live code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dynosim"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", sorted((PKG / "router").rglob("*.py")) + sorted((PKG / "disagg").rglob("*.py"))
                         + [PKG / "clock.py"], ids=lambda p: str(p.relative_to(PKG)))
def test_router_and_clock_import_no_simpy_aiohttp_or_simulator(path):
    bad = {m for m in imported_modules(path)
           if m.split(".")[0] in ("simpy", "aiohttp") or m.startswith(("dynosim.sim", "dynosim.engines"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_simulator_does_not_import_live_code():
    for path in list((PKG / "sim").rglob("*.py")) + list((PKG / "engines" / "mocker").rglob("*.py")):
        bad = {m for m in imported_modules(path) if m.startswith(("dynosim.validate", "dynosim.engines.live"))
               or m.split(".")[0] == "aiohttp"}
        assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((PKG / "planner").rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_planner_imports_no_engine_simulator_simpy_or_aiohttp(path):
    """The planner decides from plain data and a capacity protocol; it never sees an engine or the simulator."""
    bad = {m for m in imported_modules(path)
           if m.split(".")[0] in ("simpy", "aiohttp") or m.startswith(("dynosim.sim", "dynosim.engines"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((PKG / "deploy").rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_deploy_imports_no_simpy_aiohttp_simulator_or_live_code(path):
    """deploy/ builds one deployment for both worlds: it takes a clock and workers, never a world's machinery."""
    bad = {m for m in imported_modules(path)
           if m.split(".")[0] in ("simpy", "aiohttp")
           or m.startswith(("dynosim.sim", "dynosim.engines", "dynosim.validate"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_router_settings_are_read_in_deploy_only():
    """Router construction from a RunConfig lives in deploy/routers.py, not copied in sim/ or validate/."""
    for path in list((PKG / "sim").rglob("*.py")) + list((PKG / "validate").rglob("*.py")):
        assert 'pop("policy_options")' not in path.read_text(), f"{path} builds a router's settings itself"


def test_live_replay_imports_nothing_of_the_simulator():
    """validate's live replay takes its frontends and routers from deploy/, never from sim/ (no simpy clock)."""
    path = PKG / "validate" / "replay.py"
    bad = {m for m in imported_modules(path) if m.startswith("dynosim.sim") or m.split(".")[0] == "simpy"}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def loaded_after(*modules: str) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules`` (indirect imports included)."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_shared_parts_load_no_simulator_even_indirectly():
    """What both worlds share (and the live replay) never pulls in simpy or the simulator, not even through
    ``dynosim/__init__``."""
    loaded = loaded_after("dynosim.request", "dynosim.router.router", "dynosim.planner.planner",
                          "dynosim.deploy.assembly", "dynosim.metrics.catalog", "dynosim.validate.replay")
    bad = sorted(m for m in loaded if m == "simpy" or m.startswith(("simpy.", "dynosim.sim")))
    assert not bad, f"importing the shared parts loads {bad}"


def test_simulator_loads_no_live_code_even_indirectly():
    loaded = loaded_after("dynosim", "dynosim.api", "dynosim.sim.simulation", "dynosim.sim.scaling")
    assert "dynosim.api" in loaded
    bad = sorted(m for m in loaded if m.startswith(("dynosim.validate", "dynosim.engines.live", "aiohttp")))
    assert not bad, f"the simulator loads {bad}"


@pytest.mark.parametrize("path", sorted(PKG.rglob("__init__.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_every_package_says_what_it_owns_and_may_import(path):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert len(doc) > 80, f"{path} has no package docstring saying what it owns"
    assert "may import" in doc.lower(), f"{path}'s docstring does not say what the package may import"
