"""`dynosim report DIR`: one self-contained HTML page for a run or sweep folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dynosim.cli.app import app, console
from dynosim.cli.common import fail


@app.command()
def report(
    folder: Path = typer.Argument(..., metavar="DIR", help="a folder written by `dynosim run --out` (summary.json) "
                                  "or `dynosim sweep --out` (points.csv)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default DIR/report.html)"),
) -> None:
    """Write one HTML file (opens offline: Plotly is embedded) with the folder's figures, tables and config."""
    from dynosim.report import ReportError, check_writable, write_report
    from dynosim.report.data import folder_kind

    try:
        folder_kind(folder)
    except ReportError as exc:
        fail(str(exc))
    if out is not None:
        try:
            check_writable(out)
        except ReportError as exc:
            fail(f"--out {exc}")
    try:
        path = write_report(folder, out)
    except ReportError as exc:
        fail(str(exc))
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def write_default_report(folder: Path) -> Path | None:
    """The report `run --out` and `sweep` write next to their results; a failure is a warning, not an exit,
    since the results themselves are already saved."""
    from dynosim.cli.app import err_console
    from dynosim.report import ReportError, write_report

    try:
        return write_report(folder)
    except (ReportError, OSError) as exc:
        err_console.print(f"[yellow]warning:[/] report not written: {exc}")
        return None
