"""The self-contained HTML report of a run or sweep folder (`dynosim report DIR`).

This package owns reading what `dynosim run --out` and `dynosim sweep --out` leave in a folder
(``data.py``), turning it into Plotly figures (``figures.py``) and one HTML page that embeds Plotly's
JavaScript once, so the file opens with no network access (``html.py``). It only reads the files; it never
re-runs a simulation.

May import: plotly, pandas, numpy, yaml, ``dynosim.metrics`` (the catalogue's labels) and
``dynosim.sweeps`` (the recommendation's schema). Never the simulator or live code.
"""

from __future__ import annotations

from dynosim.report.data import ReportError
from dynosim.report.html import check_writable, render_report, write_report

__all__ = ["ReportError", "check_writable", "render_report", "write_report"]
