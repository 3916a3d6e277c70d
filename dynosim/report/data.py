"""Reading a run or sweep folder into plain frames and dicts, with one clear error per bad file.

A run folder has ``summary.json`` (and usually ``requests.parquet``, optionally ``timeline.parquet`` and
``replicas.parquet``); a sweep folder has ``points.csv`` (and usually ``spec.yaml``, optionally
``recommendation.json``). Optional files and columns may be missing: the report leaves out what they feed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

RECOMMENDATION_SCHEMA = "dynosim.recommendation/1"
# points.csv columns without which there is nothing to draw
POINT_COLUMNS = ("config", "load", "output_tps_per_gpu")


class ReportError(ValueError):
    """Input the report cannot be built from; the message names the file (and field) at fault."""


@dataclass
class RunFolder:
    dir: Path
    summary: dict
    requests: pd.DataFrame | None
    timeline: pd.DataFrame | None
    replicas: pd.DataFrame | None

    @property
    def config(self) -> dict | None:
        """The run's RunConfig as saved (``summary["config"]``, or ``summary["run"]["config"]``)."""
        cfg = self.summary.get("config")
        if cfg is None:
            cfg = (self.summary.get("run") or {}).get("config")
        return cfg if isinstance(cfg, dict) else None

    @property
    def trace(self) -> str | None:
        return (self.summary.get("run") or {}).get("trace") or self.summary.get("trace")


@dataclass
class SweepFolder:
    dir: Path
    points: pd.DataFrame
    recommendation: dict | None
    spec_text: str | None
    spec: dict | None

    @property
    def trace(self) -> str | None:
        for src in (self.recommendation, self.spec):
            if isinstance(src, dict) and src.get("trace"):
                return str(src["trace"])
        return None

    @property
    def objectives(self) -> dict[str, float]:
        """The objectives the points were judged against (ms), only those that are set: the recommendation's,
        else the sweep spec's ``objectives`` section."""
        obj = (self.recommendation or {}).get("objectives") or (self.spec or {}).get("objectives") or {}
        if not isinstance(obj, dict):
            return {}
        return {k: float(v) for k, v in obj.items() if k.endswith("_ms") and isinstance(v, (int, float))}


def folder_kind(d: str | Path) -> str:
    """``"sweep"`` (``points.csv``) or ``"run"`` (``summary.json``), without reading either."""
    d = Path(d)
    if not d.exists():
        raise ReportError(f"{d}: no such folder")
    if not d.is_dir():
        raise ReportError(f"{d}: not a folder")
    if (d / "points.csv").exists():
        return "sweep"
    if (d / "summary.json").exists():
        return "run"
    raise ReportError(f"{d}: neither a run folder (summary.json) nor a sweep folder (points.csv)")


def load_folder(d: str | Path) -> RunFolder | SweepFolder:
    """The run or sweep found in ``d``; a folder with ``points.csv`` is a sweep."""
    return _load_sweep(Path(d)) if folder_kind(d) == "sweep" else _load_run(Path(d))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def _read_parquet(path: Path, needs: tuple[str, ...] = ()) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ReportError(f"{path}: not a readable Parquet file: {exc}") from None
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def _load_run(d: Path) -> RunFolder:
    summary = _read_json(d / "summary.json")
    return RunFolder(
        dir=d, summary=summary,
        requests=_read_parquet(d / "requests.parquet"),
        timeline=_read_parquet(d / "timeline.parquet", needs=("time_s", "pool", "worker")),
        replicas=_read_parquet(d / "replicas.parquet", needs=("time_s", "pool")),
    )


def _load_sweep(d: Path) -> SweepFolder:
    path = d / "points.csv"
    try:
        points = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not a readable CSV file: {exc}") from None
    missing = [c for c in POINT_COLUMNS if c not in points.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    if "load_kind" not in points:
        points["load_kind"] = "rate"
    rec = None
    if (d / "recommendation.json").exists():
        rec = _read_json(d / "recommendation.json")
        schema = rec.get("schema")
        if schema != RECOMMENDATION_SCHEMA:
            raise ReportError(f"{d / 'recommendation.json'}: field schema is {schema!r}, expected "
                              f"{RECOMMENDATION_SCHEMA!r}")
        if not isinstance(rec.get("loads", []), list):
            raise ReportError(f"{d / 'recommendation.json'}: field loads must be a list")
    spec_text = spec = None
    if (d / "spec.yaml").exists():
        import yaml

        spec_text = (d / "spec.yaml").read_text()
        try:
            loaded = yaml.safe_load(spec_text)
        except yaml.YAMLError as exc:
            raise ReportError(f"{d / 'spec.yaml'}: not valid YAML: {exc}") from None
        spec = loaded if isinstance(loaded, dict) else None
    return SweepFolder(dir=d, points=points, recommendation=rec, spec_text=spec_text, spec=spec)
