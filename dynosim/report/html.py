"""Assembling the report page: header, one section per kind of data present, Plotly's JavaScript inlined once.

The page has no external references (no CDN, no fonts, no images by URL), so it opens offline and can be
mailed as one file. Figures go in as JSON (``<`` escaped so no data can close a ``<script>``) with fixed
div ids, so the same folder gives the same page; the "made" time honours ``SOURCE_DATE_EPOCH``. The
sections come from ``sweep_page`` and ``run_page``, built from ``blocks``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dynosim import __version__
from dynosim.report.blocks import esc, made_at
from dynosim.report.data import ReportError, SweepFolder, folder_kind, load_folder
from dynosim.report.run_page import run_sections
from dynosim.report.sweep_page import sweep_sections


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1b2a3a;color:#fff;padding:18px 28px}header h1{margin:0 0 6px;font-size:22px}
header .meta{font-size:13px;opacity:.85}header .meta span{margin-right:18px}
nav{padding:8px 28px;background:#eef1f4;font-size:13px;position:sticky;top:0;z-index:5}
nav a{margin-right:16px;color:#1b4f8a;text-decoration:none}
main{padding:8px 28px 40px;max-width:1400px}section{margin-top:22px}h2{font-size:18px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;font-size:13px;margin:6px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f0f2f5}
.num{text-align:right;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e2e6ea}table.points td:first-child{white-space:nowrap}
table.facts td:first-child{color:#555}pre{background:#fff;border:1px solid #ddd;padding:10px;font-size:12px;
overflow:auto;max-height:480px}.verdict{padding:12px 16px;font-size:15px;border-left:5px solid;background:#fff;
margin:8px 0}.verdict.ok{border-color:#2e8b57}.verdict.warn{border-color:#d98c00}
.load{background:#fff;border:1px solid #e2e2e2;padding:4px 14px 8px;margin:10px 0}.load.target{border-color:#1b4f8a}
.tag{background:#1b4f8a;color:#fff;font-size:11px;padding:1px 6px;border-radius:3px;margin-left:6px}
.dsfig{width:100%;background:#fff;border:1px solid #e2e2e2;margin:8px 0}details{margin:6px 0}summary{cursor:pointer}
"""

SORT_JS = """
document.addEventListener('click',function(e){var th=e.target.closest('table.sortable th');if(!th)return;
var tb=th.closest('table').tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
var rows=Array.prototype.slice.call(tb.rows);rows.sort(function(a,b){var x=a.cells[i],y=b.cells[i];
var u=x.dataset.v,v=y.dataset.v;var r=(u!==undefined&&v!==undefined&&u!==''&&v!=='')?(parseFloat(u)-parseFloat(v))
:x.textContent.localeCompare(y.textContent);return asc?r:-r;});rows.forEach(function(r){tb.appendChild(r);});});
"""


def render_report(d: str | Path) -> str:
    """The whole page for the run or sweep folder ``d``."""
    from plotly.offline import get_plotlyjs

    folder = load_folder(d)
    path = Path(d)
    if isinstance(folder, SweepFolder):
        kind, sections = "sweep", sweep_sections(folder)
        extra = []
        budget = (folder.recommendation or {}).get("gpu_budget") or (folder.spec or {}).get("gpu_budget")
        if budget is not None:
            extra.append(f"GPU budget {budget}")
    else:
        kind, sections = "run", run_sections(folder)
        extra = []
        run = folder.summary.get("run") or {}
        if run.get("seed") is not None:
            extra.append(f"seed {run['seed']}")
        if run.get("dynosim_version") and run["dynosim_version"] != __version__:
            extra.append(f"simulated with dynosim {run['dynosim_version']}")
    meta = [f"folder {path}", f"dynosim {__version__}", f"made {made_at()}",
            f"trace {folder.trace or 'not recorded'}", *extra]
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    title = f"dynosim {kind} report: {path.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script><script>{SORT_JS}</script></head><body>'
            f'<header><h1>{esc(title)}</h1><div class="meta">'
            + "".join(f"<span>{esc(m)}</span>" for m in meta)
            + f"</div></header><nav>{nav}</nav><main>"
            + "".join(body for _, _, body in sections)
            + "</main></body></html>\n")


def check_writable(out: str | Path) -> None:
    """Raise ReportError unless a file can be written at ``out`` (checked before any work is done)."""
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"{out}: is a folder, not a file")
    parent = out.parent
    if not parent.is_dir():
        raise ReportError(f"{out}: folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".report-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write in {parent}: {exc.strerror or exc}") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise ReportError(f"{out}: file is not writable")


def write_report(d: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run or sweep folder ``d`` to ``out`` (default ``d/report.html``); returns it."""
    d = Path(d)
    folder_kind(d)                          # a bad folder is the first error, before --out
    target = Path(out) if out is not None else d / "report.html"
    check_writable(target)
    page = render_report(d)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return target
