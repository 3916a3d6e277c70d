"""examples/pareto.ipynb runs top to bottom through the Python API (on a small slice of the sample)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_writes_outside_the_repository_by_default():
    """Run without DYNOSIM_OUT, the notebook's results folder is under the system's temporary directory."""
    nb = nbformat.read(ROOT / "examples" / "pareto.ipynb", as_version=4)
    setup = "\n".join(line for line in nb.cells[1].source.splitlines() if not line.startswith("%"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNOSIM_")}
    code = setup + "\nprint(OUT.resolve())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "examples", env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    assert not Path(out).is_relative_to(ROOT) and Path(out).is_relative_to(tempfile.gettempdir())


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
    assert summary["points"] == 24 and 1 <= summary["frontier"] <= summary["meet"] <= summary["points"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2     # both frontier figures rendered
    assert "run " in "".join(o.get("text", "") for o in outputs)           # the verdict was printed
    assert (tmp_path / "out" / "results.parquet").exists()
