"""Every command's `--help` fits an 80-column terminal with every option name whole.

The commands are found by walking the click tree typer builds, so a command added later is checked
without touching this file.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from dynosim.cli import app

runner = CliRunner()


def _commands(cmd, path: tuple[str, ...] = ()):
    """(path, command) for the command and everything under it (typer vendors click: duck-typed)."""
    yield path, cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        yield from _commands(sub, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))


def _help(path: tuple[str, ...]) -> str:
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert res.exit_code == 0, res.output
    return res.output


def test_the_walk_finds_the_sub_apps():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"run", "sweep", "validate", "calibrate", "trace inspect", "hardware show"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "dynosim" for p, _ in COMMANDS])
def test_help_fits_80_columns_with_every_option_name_whole(path, cmd):
    text = _help(path)
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, f"lines wider than 80 columns:\n" + "\n".join(wide)
    for param in cmd.params:
        if getattr(param, "hidden", False) or param.param_type_name != "option":
            continue
        for name in [*param.opts, *param.secondary_opts]:
            # whole: followed by a space, a comma or a panel border, never by a cut ("…")
            assert any(tok.strip("│,") == name for line in text.splitlines() for tok in line.split()), \
                f"`dynosim {' '.join(path)} --help` does not show {name} whole:\n{text}"
    cut = re.findall(r"\S+…", text)  # rich ends a cut cell with "…" glued to what is left of it
    assert not cut, f"`dynosim {' '.join(path)} --help` cuts {cut}:\n{text}"


def test_long_commands_group_their_options_into_panels():
    """A screen of 60 options in one box is unreadable: the big commands say which part each flag sets."""
    for path in (("run",), ("validate",), ("calibrate",), ("sweep",)):
        text = _help(path)
        panels = [line for line in text.splitlines() if line.startswith("╭─")]
        assert len(panels) >= 3, f"`dynosim {' '.join(path)} --help` has {len(panels)} panel(s)"
