"""`dynosim report`: the page's content for real run and sweep folders, bad input, and the page in a real
(headless Chromium) browser: no script errors, no network requests, plots drawn."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import dynosim
from dynosim.cli import app
from dynosim.report import ReportError, render_report, write_report
from dynosim.report.figures import frontier_figure, thin_series

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "traces" / "conversation_1k.jsonl"
PLANNER = Path(__file__).resolve().parents[1] / "examples" / "planner_agg.yaml"
runner = CliRunner()


def plotly_js_head() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()[:300]


def plotly_js_full() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def assert_self_contained(page: str) -> None:
    """Plotly's JavaScript inline exactly once, and nothing else on the page fetches anything."""
    from plotly.offline import get_plotlyjs

    assert page.count(plotly_js_head()) == 1
    rest = page.replace(get_plotlyjs(), "")
    assert "src=" not in rest and "http://" not in rest and "https://" not in rest and "@import" not in rest


# ----------------------------------------------------------------------------------------- real folders

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real planner run (so replicas.parquet exists), written by `dynosim run --out` with its report."""
    out = tmp_path_factory.mktemp("run") / "run"
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--config", str(PLANNER), "--limit", "200",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A real small sweep (2 seeds on 80% resamples, so figures have intervals), written by `dynosim sweep`
    with its report."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    res = runner.invoke(app, ["sweep", "--trace", str(SAMPLE), "--limit", "100", "--budget", "4", "--load", "1,2",
                              "--router-mode", "kv", "--repeats", "2", "--resample-fraction", "0.8",
                              "--ttft-p90", "2500", "--itl", "20",
                              "--executor", "serial", "--out", str(out)])
    assert res.exit_code in (0, 4), res.output      # 4: nothing meets the objectives at the target load
    return out


def timeline_frame(n: int = 50, workers: int = 2) -> pd.DataFrame:
    """A small engine timeline in the documented wide shape: per-worker rows and pool-wide (worker -1) rows."""
    rows = []
    for i in range(n):
        t = float(i)
        for w in range(workers):
            rows.append({"time_s": t, "pool": "agg", "worker": w, "running": (i + w) % 7, "waiting": i % 3,
                         "kv_used_blocks": 100 + 10 * i, "kv_cached_blocks": 50 + 5 * i, "kv_total_blocks": 1000,
                         "tokens_scheduled": 512 * ((i + w) % 4), "passes": i})
        rows.append({"time_s": t, "pool": "agg", "worker": -1, "router_queue": i % 5, "transfers_in_flight": 0,
                     "replicas": workers})
    return pd.DataFrame(rows)


def recommendation(points: pd.DataFrame) -> dict:
    """A hand-made recommendation.json over ``points`` in schema dynosim.recommendation/1."""
    def point(r):
        figs = {k: float(r[k]) for k in ("output_tps_per_gpu", "tps_user_mean", "ttft_p90", "itl_mean",
                                         "e2e_p90", "goodput_rps") if k in r}
        return {"config": r["config"], "mode": r["mode"], "tp": int(r["tp"]), "workers": int(r["workers"]),
                "prefill": int(r["prefill"]), "decode": int(r["decode"]), "router": r["router"], "num_gpus": 4,
                "figures": figs, "ci": {"output_tps_per_gpu": 3.25}}

    loads = []
    for load, g in points.groupby("load"):
        g = g.sort_values("output_tps_per_gpu", ascending=False)
        loads.append({"load": float(load), "load_kind": "rate", "rate_rps": 3.0 * load, "points": len(g),
                      "feasible_points": 2, "best": point(g.iloc[0]), "runner_up": point(g.iloc[1]),
                      "margin": {"metric": "output_tps_per_gpu", "abs": 12.5, "ratio": 0.0625, "ci": 4.6,
                                 "significant": True},
                      "fewest_gpus": {"config": g.iloc[0]["config"], "gpus": 3, "max_load": 2.0,
                                      "extrapolated": False},
                      "rejected": [{"config": g.iloc[-1]["config"], "failed_requests": 2,
                                    "missed": [{"objective": "ttft_p90_ms", "label": "TTFT p90", "limit": 1000.0,
                                                "value": 1234.0, "over": 234.0, "over_pct": 23.4}]}],
                      "closest": []})
    return {"schema": "dynosim.recommendation/1", "trace": "hand-made.jsonl", "gpu_budget": 4,
            "objectives": {"ttft_p90_ms": 1000.0, "itl_mean_ms": 15.0, "itl_p90_ms": None, "e2e_p90_ms": None},
            "target": {"load": 2.0, "load_kind": "rate", "rate_rps": 6.0}, "feasible": True,
            "verdict": "At ×2 on 4 GPUs run the hand-made winner.", "loads": loads}


# -------------------------------------------------------------------------------------------- content

def test_run_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "dynosim run report" in page and f"dynosim {dynosim.__version__}" in page
    assert str(SAMPLE.name) in page                      # the trace
    for sid in ("summary", "latency", "planner", "configuration"):
        assert f'<section id="{sid}">' in page
    for div in ("latency-cdf", "ttft-time", "replicas"):
        assert f'Plotly.newPlot("fig-{div}"' in page
    assert_self_contained(page)
    assert 4_000_000 < len(page.encode()) < 7_000_000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['ttft_ms']['p90']:,.2f}" in page   # the latency table carries the summary's figures


def test_element_ids_are_unique(run_dir, sweep_dir):
    """Plotly draws into the first element with a figure's id: a section of the same name would swallow it."""
    import re

    for d in (run_dir, sweep_dir):
        ids = re.findall(r'\sid="([^"]+)"', (d / "report.html").read_text().replace(plotly_js_full(), ""))
        assert len(ids) == len(set(ids)) > 3, ids


def test_sweep_writes_a_report_with_frontier_and_points(sweep_dir):
    page = (sweep_dir / "report.html").read_text()
    assert "dynosim sweep report" in page
    for sid in ("frontier", "points", "configuration"):
        assert f'<section id="{sid}">' in page
    assert 'Plotly.newPlot("fig-frontier"' in page
    assert_self_contained(page)
    points = pd.read_csv(sweep_dir / "points.csv")
    for config in points["config"]:
        assert config in page
    assert "gpu_budget: 4" in page                       # spec.yaml
    if (sweep_dir / "recommendation.json").exists():
        rec = json.loads((sweep_dir / "recommendation.json").read_text())
        assert '<section id="recommendation">' in page
        from html import escape
        assert escape(rec["verdict"]) in page


def test_recommendation_section(sweep_dir, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(sweep_dir, d)
    points = pd.read_csv(d / "points.csv")
    (d / "recommendation.json").write_text(json.dumps(recommendation(points)))
    page = render_report(d)
    assert "At ×2 on 4 GPUs run the hand-made winner." in page
    assert "trace hand-made.jsonl" in page
    assert "2× arrival rate (6.00 req/s)" in page and "target</span>" in page
    assert "TTFT p90 ≤ 1,000 ms, ITL mean ≤ 15.0 ms" in page
    assert "runner-up" in page and "± 3.2" in page       # the point's interval
    assert "Ahead of the runner-up by 12.5 tokens/s/GPU (+6.2%); beyond the 95% interval (± 4.6)" in page
    assert "TTFT p90 1,234 ms &gt; 1,000 ms (+23.4%); 2 failed requests" in page
    assert "Fewest GPUs: <b>" in page and "on 3 GPUs" in page


def test_frontier_figure_per_load(sweep_dir):
    points = pd.read_csv(sweep_dir / "points.csv")
    points["meets_slo"] = [i % 2 == 0 for i in range(len(points))]
    levels = sorted(points["load"].unique())
    best = {("rate", float(levels[1])): str(points[points["load"] == levels[1]]["config"].iloc[0])}
    fig = frontier_figure(points, {"ttft_p90_ms": 1000.0, "itl_mean_ms": 15.0}, initial=("rate", float(levels[1])),
                          best=best)
    # one button per load; each shows exactly the traces of its load
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == len(levels)
    markers = [t for t in fig.data if t.mode == "markers" and t.name != "recommended"]
    assert {t.visible for t in markers} == {True, False}
    vis = buttons[0].args[0]["visible"]
    assert [v for v, t in zip(vis, fig.data) if t.mode == "markers"] != \
        [v for v, t in zip(buttons[1].args[0]["visible"], fig.data) if t.mode == "markers"]
    shown = [t for t in fig.data if t.visible]
    assert any(t.name == "recommended" for t in shown)
    # the point missing an objective is faded; the others are not
    opac = np.concatenate([np.atleast_1d(t.marker.opacity) for t in markers])
    assert 0.25 in opac and 1.0 in opac
    # hover: the deployment and ± intervals (2 seeds)
    hover = " ".join(h for t in markers for h in t.hovertext)
    assert "tokens/s/GPU:" in hover and " ± " in hover and "2 seeds" in hover
    # agg circle, disagg square (as in the sweep's PNGs)
    assert {t.marker.symbol for t in markers} == {"circle", "square"}
    # objectives as dotted lines: TTFT on the TTFT panel, ITL at 1000/15 tokens/s/user
    xs = sorted(s.x0 for s in fig.layout.shapes)
    assert xs == pytest.approx([1000 / 15, 1000.0])


def test_frontier_tolerates_missing_optional_columns(sweep_dir, tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    points = pd.read_csv(sweep_dir / "points.csv")
    keep = ["config", "load", "output_tps_per_gpu", "ttft_p90"]
    points[keep].to_csv(d / "points.csv", index=False)
    page = render_report(d)
    assert 'Plotly.newPlot("fig-frontier"' in page and "trace not recorded" in page


def test_timeline_section(run_dir, tmp_path):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    timeline_frame().to_parquet(d / "timeline.parquet", index=False)
    page = render_report(d)
    assert '<section id="timeline">' in page and 'Plotly.newPlot("fig-timeline"' in page
    for title in ("running requests", "KV used (% of blocks)", "router queue", "replicas"):
        assert title in page
    assert "agg worker 1" in page and "agg (pool)" in page


def test_run_folder_with_only_a_summary(tmp_path):
    """Sections whose files are absent are left out, not drawn empty."""
    (tmp_path / "summary.json").write_text(json.dumps({"requests": {"completed": 3, "total": 4, "failed": 1},
                                                       "ttft_ms": {"mean": 12.5, "p50": 10.0}}))
    page = render_report(tmp_path)
    assert '<section id="summary">' in page and "3 / 4 (1 failed)" in page and "12.50" in page
    for sid in ("latency", "timeline", "planner", "configuration"):
        assert f'<section id="{sid}">' not in page
    assert "Plotly.newPlot(" not in page and "trace not recorded" in page


def test_thin_series_keeps_peaks():
    t = np.arange(10_000, dtype=float)
    v = np.zeros_like(t)
    v[4321] = 99.0
    tt, vv, thinned = thin_series(t, v, n=500)
    assert thinned and len(tt) <= 500 and vv.max() == 99.0 and tt[0] == 0.0
    assert thin_series(t[:10], v[:10], n=500)[2] is False


def test_report_is_deterministic(sweep_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = write_report(sweep_dir, tmp_path / "a.html").read_bytes()
    b = write_report(sweep_dir, tmp_path / "b.html").read_bytes()
    assert a == b and b"made 2023-11-14 22:13 UTC" in a


def test_script_in_data_cannot_close_the_script_tag(sweep_dir, tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    points = pd.read_csv(sweep_dir / "points.csv")
    points.loc[0, "config"] = "</script><script>alert(1)</script>"
    points.to_csv(d / "points.csv", index=False)
    page = render_report(d)
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page     # shown as text in the table
    assert "\\u003c" in page                                    # and escaped in the figure's JSON


def test_cli_report_and_out(run_dir, tmp_path):
    out = tmp_path / "elsewhere.html"
    res = runner.invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.stat().st_size > 4_000_000


def test_run_no_report(tmp_path):
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--limit", "30", "--out", str(tmp_path / "r"),
                              "--no-report"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "summary.json").exists() and not (tmp_path / "r" / "report.html").exists()


def test_sweep_no_report(tmp_path):
    res = runner.invoke(app, ["sweep", "--trace", str(SAMPLE), "--limit", "30", "--budget", "2", "--load", "1",
                              "--mode", "agg", "--router-mode", "kv", "--executor", "serial", "--no-report",
                              "--out", str(tmp_path / "s")])
    assert res.exit_code in (0, 4), res.output
    assert (tmp_path / "s" / "points.csv").exists() and not (tmp_path / "s" / "report.html").exists()


def test_run_keeps_its_results_when_the_report_cannot_be_written(tmp_path):
    (tmp_path / "r" / "report.html").mkdir(parents=True)     # a folder where the page would go
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--limit", "30", "--out", str(tmp_path / "r")],
                        env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "warning: report not written" in res.output and "is a folder, not a file" in res.output
    assert (tmp_path / "r" / "summary.json").exists()


def test_no_report_without_out_is_refused():
    res = runner.invoke(app, ["run", "--trace", str(SAMPLE), "--limit", "30", "--no-report"],
                        env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "--no-report" in res.output and "without --out" in res.output


@pytest.mark.parametrize("setup,args,message", [
    ("empty", [], "neither a run folder (summary.json) nor a sweep folder (points.csv)"),
    ("missing", [], "no such folder"),
    ("run", ["--out", "{tmp}/nope/report.html"], "--out {tmp}/nope/report.html: folder {tmp}/nope does not exist"),
    ("run", ["--out", "{tmp}"], "is a folder, not a file"),
    ("bad_summary", [], "summary.json: not valid JSON"),
    ("bad_points", [], "points.csv: missing column(s) output_tps_per_gpu"),
    ("bad_schema", [], "recommendation.json: field schema is 'other/9', expected 'dynosim.recommendation/1'"),
])
def test_bad_input_is_one_error_line(tmp_path, run_dir, setup, args, message):
    d = tmp_path / "d"
    if setup == "run":
        d = run_dir
    elif setup != "missing":
        d.mkdir()
    if setup == "bad_summary":
        (d / "summary.json").write_text("{not json")
    if setup in ("bad_points", "bad_schema"):
        pd.DataFrame({"config": ["a"], "load": [1.0], **({"output_tps_per_gpu": [1.0]} if setup == "bad_schema"
                                                         else {})}).to_csv(d / "points.csv", index=False)
    if setup == "bad_schema":
        (d / "recommendation.json").write_text(json.dumps({"schema": "other/9"}))
    res = runner.invoke(app, ["report", str(d), *[a.format(tmp=tmp_path) for a in args]], env={"COLUMNS": "400"})
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "error:" in text and message.format(tmp=tmp_path) in text and "Traceback" not in text
    assert not (tmp_path / "nope").exists()


def test_library_error_names_the_folder(tmp_path):
    with pytest.raises(ReportError, match="neither a run folder"):
        write_report(tmp_path)


# ---------------------------------------------------------------------------------------------- browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install -y chromium; .ci/run does this)")


class Page:
    """A page in headless Chromium, driven over the DevTools protocol (aiohttp websocket)."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.loaded = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self.events.append(data)
                if data.get("method") == "Page.loadEventFired":
                    self.loaded.set()

    async def send(self, method: str, **params) -> dict:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        res = await asyncio.wait_for(fut, 60)
        assert "error" not in res, f"{method}: {res['error']}"
        return res.get("result", {})

    async def evaluate(self, expr: str):
        res = await self.send("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and requests that left the file."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                     for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", ""))
            elif m == "Network.requestWillBeSent":
                url = p.get("request", {}).get("url", "")
                if not url.startswith(("file:", "data:", "blob:", "about:")):
                    out.append("network request: " + url)
        return out


async def _drive(url: str, png: Path, selector: str, profile: Path) -> dict:
    """Load ``url``, wait until every figure is drawn, screenshot the whole page; returns the traces drawn in
    ``selector``, the figures on the page and how many were drawn into their own div, problems, page height."""
    import aiohttp

    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
            target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                for domain in ("Runtime", "Page", "Log", "Network"):
                    await page.send(f"{domain}.enable")
                await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1,
                                mobile=False)
                await page.send("Page.navigate", url=url)
                await asyncio.wait_for(page.loaded.wait(), 60)
                figs = "Array.from(document.querySelectorAll('.dsfig'))"
                for _ in range(300):
                    drawn = await page.evaluate(f"{figs}.filter(d => d.querySelector('.main-svg')).length")
                    if drawn == await page.evaluate(f"{figs}.length"):
                        break
                    await asyncio.sleep(0.1)
                out = {"traces": await page.evaluate(f"document.querySelectorAll('{selector} .scatterlayer .trace')"
                                                     ".length"),
                       "figures": await page.evaluate(f"{figs}.length"), "drawn": drawn}
                height = int(await page.evaluate("document.documentElement.scrollHeight"))
                await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=min(height, 12000),
                                deviceScaleFactor=1, mobile=False)
                await asyncio.sleep(0.5)                 # let responsive plots re-lay out
                shot = await page.send("Page.captureScreenshot", format="png")
                png.write_bytes(base64.b64decode(shot["data"]))
                page.reader.cancel()
                return {**out, "problems": page.problems(), "height": height}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


def render_in_chromium(report: Path, png: Path, selector: str, profile: Path):
    profile.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_drive(report.resolve().as_uri(), png, selector, profile))


@needs_chromium
def test_sweep_report_in_browser(sweep_dir, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(sweep_dir, d)
    if not (d / "recommendation.json").exists():     # the sweep predates recommendations: show that section too
        (d / "recommendation.json").write_text(json.dumps(recommendation(pd.read_csv(d / "points.csv"))))
    got = render_in_chromium(write_report(d), tmp_path / "sweep.png", "#fig-frontier", tmp_path / "profile")
    assert got["problems"] == []
    assert got["traces"] > 0, "the frontier plot drew no traces"
    assert got["figures"] == got["drawn"] == 1
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and got["height"] > 1000


@needs_chromium
def test_run_report_in_browser(run_dir, tmp_path):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    if not (d / "timeline.parquet").exists():        # runs that predate the timeline: a hand-made one
        timeline_frame().to_parquet(d / "timeline.parquet", index=False)
    got = render_in_chromium(write_report(d), tmp_path / "run.png", "#fig-latency-cdf", tmp_path / "profile")
    assert got["problems"] == []
    assert got["traces"] > 0, "the latency plot drew no traces"
    assert got["figures"] == got["drawn"] == 4          # CDFs, TTFT over time, timeline, replicas
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and got["height"] > 1000
