"""The typer application the command modules register on, and the consoles they print to."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="dynosim: replay LLM request traces through a simulated Dynamo-style serving stack.")
trace_app = typer.Typer(no_args_is_help=True, help="Look at and transform traces.")
app.add_typer(trace_app, name="trace")
hardware_app = typer.Typer(no_args_is_help=True, help="What the performance database covers, and what one worker is.")
app.add_typer(hardware_app, name="hardware")
console = Console()
err_console = Console(stderr=True)
