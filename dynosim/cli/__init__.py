"""Command line: thin wrappers that parse, call the library, print and save.

One module per group of commands (``run``, ``traces``, ``validate``, ``calibrate``, ``sweep``,
``hardware``, ``report``);
importing this package registers them all on ``app``.

May import: typer, rich and every other dynosim package (the CLI is the top of the import graph);
nothing imports it but ``dynosim.cli.__main__``.
"""

from __future__ import annotations

from dynosim import __version__
from dynosim.cli.app import app, trace_app
# importing a command module registers its commands; this order is the order `--help` lists them
from dynosim.cli import run  # noqa: F401,E402
from dynosim.cli import traces  # noqa: F401,E402
from dynosim.cli import validate  # noqa: F401,E402
from dynosim.cli import calibrate  # noqa: F401,E402
from dynosim.cli import sweep  # noqa: F401,E402
from dynosim.cli import hardware  # noqa: F401,E402
from dynosim.cli import report  # noqa: F401,E402

__all__ = ["app", "main", "trace_app"]


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:  # pragma: no cover
    app()
