"""`dynosim regress`: fixed cases against a committed baseline; worse beyond tolerance fails the build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynosim.cli import app
from dynosim.sweeps.regress import RegressSpec, compare

ROOT = Path(__file__).resolve().parents[1]


def _spec(**kw):
    return RegressSpec(cases=[{"name": "a", "trace": "t.jsonl"}], metrics=["ttft_p50", "goodput_rps"], **kw)


def test_compare_directions_and_tolerances():
    spec = _spec(tolerance=0.05, tolerances={"goodput_rps": 0.0})
    base = {"a": {"ttft_p50": 100.0, "goodput_rps": 10.0}}
    r = compare(spec, base, {"a": {"ttft_p50": 104.0, "goodput_rps": 10.0}})       # +4% latency: within 5%
    assert r.exit_code == 0 and r.table["status"].tolist() == ["ok", "ok"]
    r = compare(spec, base, {"a": {"ttft_p50": 106.0, "goodput_rps": 10.5}})       # latency up 6%: regressed
    assert r.exit_code == 1 and r.table["status"].tolist() == ["REGRESSED", "improved"]
    r = compare(spec, base, {"a": {"ttft_p50": 80.0, "goodput_rps": 9.99}})        # goodput has no slack
    assert r.table["status"].tolist() == ["improved", "REGRESSED"] and r.regressions == 1
    r = compare(spec, {}, {"a": {"ttft_p50": 1.0, "goodput_rps": 1.0}})
    assert r.missing == ["a"] and r.exit_code == 1


@pytest.mark.parametrize("kw,match", [({"metrics": ["speed"]}, "unknown metric 'speed'"),
                                      ({"tolerances": {"nope": 0.1}}, "unknown metric"),
                                      ({"cases": [{"name": "a", "trace": "t", "config": {"workers": 0}}]},
                                       "case 'a': invalid config"),
                                      ({"cases": [{"name": "a", "trace": "t"}, {"name": "a", "trace": "u"}]},
                                       "unique")])
def test_spec_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        RegressSpec(**{"cases": [{"name": "a", "trace": "t.jsonl"}], **kw})


def test_cli_passes_on_the_committed_baseline_and_fails_on_a_worse_router(tmp_path):
    spec, base = ROOT / "examples" / "regress.yaml", ROOT / "examples" / "regress_baseline.json"
    r = CliRunner().invoke(app, ["regress", "--spec", str(spec), "--baseline", str(base)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "0 regression(s)" in r.output
    # the same cases with the KV router swapped for random routing: worse prefix reuse and latency → exit 1
    work = tmp_path / "ex"
    shutil.copytree(ROOT / "examples", work)
    text = (work / "regress.yaml").read_text().replace("workers: 8, router_mode: kv", "workers: 8, router_mode: random")
    (work / "regress.yaml").write_text(text)
    r = CliRunner().invoke(app, ["regress", "--spec", str(work / "regress.yaml"), "--baseline",
                                 str(work / "regress_baseline.json")], env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    assert "REGRESSED" in r.output and "prefix_reuse" in r.output
    # --update-baseline accepts the new figures; the next run passes
    r = CliRunner().invoke(app, ["regress", "--spec", str(work / "regress.yaml"), "--baseline",
                                 str(work / "regress_baseline.json"), "--update-baseline"])
    assert r.exit_code == 0 and json.loads((work / "regress_baseline.json").read_text())["cases"]
    r = CliRunner().invoke(app, ["regress", "--spec", str(work / "regress.yaml"), "--baseline",
                                 str(work / "regress_baseline.json")])
    assert r.exit_code == 0, r.output


def test_cli_bad_input(tmp_path):
    spec, base = ROOT / "examples" / "regress.yaml", tmp_path / "none.json"
    r = CliRunner().invoke(app, ["regress", "--spec", str(spec), "--baseline", str(base)])
    assert r.exit_code == 2 and "baseline not found" in r.output and "--update-baseline" in r.output
    r = CliRunner().invoke(app, ["regress", "--spec", str(tmp_path / "x.yaml"), "--baseline", str(base)])
    assert r.exit_code == 2 and "regress spec not found" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("cases: [{name: a, trace: missing.jsonl}]\n")
    r = CliRunner().invoke(app, ["regress", "--spec", str(bad), "--baseline", str(base), "--update-baseline"])
    assert r.exit_code == 2 and "trace not found" in r.output
