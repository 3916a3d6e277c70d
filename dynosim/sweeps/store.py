"""Results, appended point by point, so a killed sweep resumes where it stopped, and never mixes inputs.

``results.jsonl`` holds one JSON object per finished point, written with one
``write`` and flushed to disk before the next point is recorded. A kill can
only tear the last line (it has no newline yet): that line is dropped (and cut
from the file) when a sweep reopens the store, and at most the points in
flight when the sweep died run again. Any other damaged line is an error that
names the file and the line; nothing is cut, so no finished point is lost.

A point's id is a hash of its config only, so the folder also records what
every result depends on beyond that (``manifest.json``: the trace's content
digest, ``--limit``, the resampling, the contents of the files the points
read, the dynosim version); a sweep of other inputs into the same folder is
refused instead of reusing results that belong to another input. A sweep holds
an exclusive lock on ``sweep.lock`` while it runs, so two sweeps never write
one folder at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "dynosim.sweep-inputs/1"
LOCK = "sweep.lock"

# lock descriptors this process holds: a forked pool worker closes its inherited copies (runner.py), so a
# worker that outlives its parent never keeps the folder locked
HELD_LOCK_FDS: set[int] = set()


class StoreError(ValueError):
    """A results folder that cannot be used as asked; the message names the folder, file or line."""


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks (traces can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_manifest(trace: str | Path, limit: int | None, points: Iterable[Any],
                   trace_sha256: str | None = None) -> dict[str, Any]:
    """What the results of ``points`` on ``trace`` depend on besides their configs (the point ids).

    Files the points read are recorded by the name the configs give (what the point id holds) with the
    digest of what that name reads now: timing profiles, and a model's config.json given as a path.
    """
    from dynosim import __version__
    from dynosim.engines.mocker.timing import resolve_profile

    files: dict[str, str] = {}
    resample: set[float | None] = set()
    for p in points:
        resample.add(p.resample_fraction)
        for args in p.config.pool_engines().values():
            if args.timing_profile:
                key = f"timing_profile {args.timing_profile}"
                if key not in files:
                    path = resolve_profile(args.timing_profile)
                    if not path.is_file():
                        raise FileNotFoundError(f"timing profile not found: {path}")
                    files[key] = sha256_file(path)
            model = args.hardware.model if args.hardware is not None else None
            if model:
                cfg = Path(model).expanduser()
                cfg = cfg / "config.json" if cfg.is_dir() else cfg
                if cfg.is_file() and f"model {model}" not in files:
                    files[f"model {model}"] = sha256_file(cfg)
                    quant = cfg.parent / "hf_quant_config.json"
                    if quant.is_file():
                        files[f"model {model} hf_quant_config.json"] = sha256_file(quant)
    return {"schema": MANIFEST_SCHEMA, "dynosim_version": __version__,
            "trace": {"sha256": trace_sha256 or sha256_file(trace), "path": str(trace)},
            "limit": limit, "resample_fraction": sorted(resample, key=lambda x: (x is not None, x or 0.0)),
            "files": dict(sorted(files.items()))}


def _short(v: Any) -> str:
    if v is None:
        return "none"
    s = str(v)
    return s[:12] if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s


def manifest_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why results recorded under ``old`` cannot be mixed with results of ``new`` (None when they can).

    Files only one side read are not a difference: a spec may grow (another timing profile) and keep the
    results of the points it shares.
    """
    if old.get("schema") != MANIFEST_SCHEMA:
        return f"manifest schema {old.get('schema')!r} is not {MANIFEST_SCHEMA!r}"
    checks = [("trace digest", (old.get("trace") or {}).get("sha256"), new["trace"]["sha256"]),
              ("--limit", old.get("limit"), new["limit"]),
              ("resample_fraction", old.get("resample_fraction"), new["resample_fraction"]),
              ("dynosim version", old.get("dynosim_version"), new["dynosim_version"])]
    old_files = old.get("files") or {}
    checks += [(name, old_files[name], digest) for name, digest in new["files"].items() if name in old_files]
    for what, was, now in checks:
        if was != now:
            extra = f", trace {new['trace']['path']}" if what == "trace digest" else ""
            what = f"{what} digest" if what.startswith(("timing_profile ", "model ")) else what
            return f"{what} differs: {_short(was)} in the folder, {_short(now)} now{extra}"
    return None


class ResultStore:
    """The finished points of a results folder.

    ``ResultStore(dir)`` only reads (a partial or finished sweep's rows; a torn last line is skipped, not cut);
    ``ResultStore.open_for_sweep`` locks the folder, checks its inputs and is what a sweep appends to.
    """

    def __init__(self, out_dir: str | Path, *, _writer: bool = False):
        self.dir = Path(out_dir)
        self.path = self.dir / "results.jsonl"
        self.rows: dict[str, dict[str, Any]] = {}
        self.torn = 0
        self._lock_fd: int | None = None
        self._writer = _writer
        if not _writer:
            if self.dir.exists() and not self.dir.is_dir():
                raise StoreError(f"{self.dir}: not a directory")
            self._load()

    @classmethod
    def open_for_sweep(cls, out_dir: str | Path, inputs: dict[str, Any] | None = None, *,
                       fresh: bool = False) -> "ResultStore":
        """The folder locked for this sweep (created when missing; checked before any point runs).

        ``inputs`` (``input_manifest``) must match what the folder's results were computed from; ``fresh``
        clears the folder's results first. Raises ``StoreError`` naming ``--out``.
        """
        s = cls(out_dir, _writer=True)
        d = s.dir
        if d.exists() and not d.is_dir():
            raise StoreError(f"--out {d}: exists and is not a directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"--out {d}: cannot create the directory ({exc.strerror or exc})") from None
        s._lock()
        try:
            if not os.access(d, os.W_OK | os.X_OK):
                raise StoreError(f"--out {d}: not writable")
            if fresh:
                s.clear()
            s._load()
            if inputs is not None:
                s._check_inputs(inputs)
        except BaseException:
            s.close()
            raise
        return s

    def _lock(self) -> None:
        path = self.dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"--out {self.dir}: not writable ({exc.strerror or exc})") from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: no protection, but no failure
            self._lock_fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                pid = path.read_text().strip() or "unknown"
            except OSError:
                pid = "unknown"
            raise StoreError(f"--out {self.dir} is in use by another sweep (pid {pid})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        HELD_LOCK_FDS.add(fd)

    def close(self) -> None:
        """Release the folder's lock (the sweep is over, or failed)."""
        if self._lock_fd is not None:
            HELD_LOCK_FDS.discard(self._lock_fd)
            os.close(self._lock_fd)           # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clear(self) -> None:
        """Forget every result and the inputs they came from (``--fresh``)."""
        for name in ("results.jsonl", MANIFEST):
            (self.dir / name).unlink(missing_ok=True)
        self.rows.clear()
        self.torn = 0

    def _check_inputs(self, inputs: dict[str, Any]) -> None:
        mpath = self.dir / MANIFEST
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text())
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, OSError, UnicodeDecodeError) as exc:
                raise StoreError(f"{mpath}: unreadable ({exc}); use --fresh to start over or another --out") \
                    from None
            why = manifest_difference(old, inputs)
            if why:
                raise StoreError(f"--out {self.dir} holds results of another input ({why}); use --fresh to start "
                                 "over or another --out")
            merged = {**inputs, "files": {**(old.get("files") or {}), **inputs["files"]}}
            if merged == old:
                return
        elif self.rows:
            raise StoreError(f"--out {self.dir} holds results without a record of their inputs ({MANIFEST} is "
                             "missing), so they may belong to another trace; use --fresh to start over or "
                             "another --out")
        else:
            merged = inputs
        tmp = mpath.with_name(MANIFEST + ".tmp")
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, mpath)

    def _load(self) -> None:
        self.rows.clear()
        self.torn = 0
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise StoreError(f"{self.path}: not a file")
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        good = 0
        for n, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):      # only the last line can lack its newline: a kill mid-write
                self.torn = 1
                break
            try:
                row = json.loads(line)
            except UnicodeDecodeError as exc:
                raise StoreError(f"{self.path}: line {n}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise StoreError(f"{self.path}: line {n}: not valid JSON ({exc.msg}, column {exc.colno}); "
                                 "repair or delete the line, or use --fresh to start over") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise StoreError(f"{self.path}: line {n}: not a result (a JSON object with a string 'id'); "
                                 "repair or delete the line, or use --fresh to start over")
            self.rows[row["id"]] = row
            good += len(line)
        if self.torn and self._writer:
            with open(self.path, "r+b") as fh:      # cut the torn tail so appends start on a clean line
                fh.truncate(good)

    def __contains__(self, point_id: str) -> bool:
        return point_id in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        if not self._writer:
            raise RuntimeError("a read-only store: open it with ResultStore.open_for_sweep to append")
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
