"""HTML building blocks of the report: escaping, tables (sortable, numeric cells), a Plotly figure as a div,
sections, YAML blocks and the page's "made" time (``SOURCE_DATE_EPOCH`` honoured)."""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone

MAX_TABLE_ROWS = 500      # rows of the points / replica tables before the rest is elided


class Raw(str):
    """Markup that table cells take as is (everything else is escaped)."""


def esc(v) -> str:
    return v if isinstance(v, Raw) else html.escape("" if v is None else str(v))


def num(v, nd: int = 1) -> str:
    from dynosim.report.figures import num as _num

    return _num(v, nd)


def table(headers: list[str], rows: list[list], *, cls: str = "", sortable: bool = False,
          numeric: set[int] | None = None) -> str:
    """An HTML table; ``numeric`` columns are right-aligned and sort by value (``data-v``)."""
    numeric = numeric or set()
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    out = [f'<table class="{classes}">']
    if any(headers):
        out.append("<thead><tr>")
        out += [f'<th{" class=num" if i in numeric else ""}>{esc(h)}</th>' for i, h in enumerate(headers)]
        out.append("</tr></thead>")
    out.append("<tbody>")
    for r in rows:
        out.append("<tr>")
        for i, c in enumerate(r):
            if isinstance(c, tuple):        # (shown text, sort value)
                shown, key = c
                out.append(f'<td class="num" data-v="{esc(key)}">{esc(shown)}</td>')
            else:
                out.append(f'<td{" class=num" if i in numeric else ""}>{esc(c)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figure_div(fig, div_id: str) -> str:
    """A figure as a div and the script that draws it (Plotly itself is loaded once, in the head)."""
    import plotly.io as pio

    spec = pio.to_json(fig, validate=False, pretty=False).replace("<", "\\u003c")
    height = fig.layout.height or 450
    config = json.dumps({"responsive": True, "displaylogo": False})
    div_id = f"fig-{div_id}"       # never the id of a section (Plotly would draw into the section)
    return (f'<div id="{div_id}" class="dsfig" style="height:{int(height)}px"></div>'
            f'<script>(function(){{var f={spec};Plotly.newPlot("{div_id}",f.data,f.layout,{config});}})();</script>')


def made_at() -> str:
    """Now in UTC, or ``SOURCE_DATE_EPOCH`` when set (reproducible pages)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else \
        datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def pre_yaml(data) -> str:
    import yaml

    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
    return f"<pre>{esc(text)}</pre>"
