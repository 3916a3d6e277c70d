"""Results, appended point by point, so a killed sweep resumes where it stopped.

``results.jsonl`` holds one JSON object per finished point, written with one
``write`` and flushed to disk before the next point is recorded; a line torn
by a kill is dropped (and cut from the file) when the store is reopened. At
most the points in flight when the sweep died are run again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd


class ResultStore:
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "results.jsonl"
        self.rows: dict[str, dict[str, Any]] = {}
        self.torn = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            self.rows[row["id"]] = row
            good += len(line)
        if good < len(data):
            self.torn = 1
            with open(self.path, "r+b") as fh:      # cut the torn tail so appends start on a clean line
                fh.truncate(good)

    def __contains__(self, point_id: str) -> bool:
        return point_id in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        line = (json.dumps(row, default=float) + "\n").encode()
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[row["id"]] = row

    def frame(self, order: list[str] | None = None) -> pd.DataFrame:
        """All rows; in ``order`` (point ids) when given, so a resumed sweep reads like an uninterrupted one."""
        rows = [self.rows[i] for i in order if i in self.rows] if order is not None else list(self.rows.values())
        return pd.DataFrame(rows)
