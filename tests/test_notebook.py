"""examples/pareto.ipynb runs top to bottom through the Python API (on a small slice of the sample)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_pareto_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "examples" / "pareto.ipynb", as_version=4)
    monkeypatch.setenv("DYNOSIM_ROOT", str(ROOT))
    monkeypatch.setenv("DYNOSIM_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("DYNOSIM_LIMIT", "80")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    last = next(o for o in nb.cells[-1].outputs if o.output_type == "execute_result")["data"]["text/plain"]
    summary = eval(last)  # noqa: S307 - the notebook's own dict literal
    assert summary["points"] == 24 and 1 <= summary["frontier"] <= summary["points"]
    assert any("image/png" in o.get("data", {}) for o in outputs)          # the plots rendered
    assert (tmp_path / "out" / "results.parquet").exists()
