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


# ---- figures that cannot be compared never pass (issue 12) --------------------------------------------------------

def test_nan_missing_and_failed_requests_regress():
    """NaN compared as 'ok' (neither worse nor better), so a case whose requests all failed passed."""
    nan = float("nan")
    spec = _spec(tolerance=0.05)
    base = {"a": {"ttft_p50": 100.0, "goodput_rps": 10.0}}
    r = compare(spec, base, {"a": {"ttft_p50": nan, "goodput_rps": nan, "failed": 50}})
    assert r.exit_code == 1 and r.regressions == 3
    assert r.table["status"].tolist() == ["REGRESSED"] * 3 and r.table["metric"].tolist()[-1] == "failed"
    assert r.table["why"].tolist() == ["not a number (nan)", "not a number (nan)", "50 request(s) failed"]
    r = compare(spec, base, {"a": {"goodput_rps": 10.0, "failed": 0}})                  # a figure missing
    assert r.table["status"].tolist() == ["REGRESSED", "ok"] and r.table["why"].iloc[0] == "no figure"
    # a failed request regresses even with 'failed' among the metrics and a generous tolerance
    spec = RegressSpec(cases=[{"name": "a", "trace": "t"}], metrics=["failed"], tolerances={"failed": 10.0})
    assert compare(spec, {"a": {"failed": 1}}, {"a": {"failed": 1}}).regressions == 1
    assert compare(spec, {"a": {"failed": 0}}, {"a": {"failed": 0}}).table["status"].tolist() == ["ok"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


STARVED = ("metrics: [ttft_p50, goodput_rps, failed]\ncases:\n  - name: starved\n    trace: {trace}\n    limit: 30\n"
           "    config: {{workers: 2, engine: {{num_gpu_blocks: {blocks}}}}}\n")


def test_cli_a_case_whose_requests_all_fail_regresses_and_cannot_be_baselined(tmp_path):
    trace = ROOT / "examples" / "traces" / "conversation_1k.jsonl"
    good = _write(tmp_path / "good.yaml", STARVED.format(trace=trace, blocks=4096))
    bad = _write(tmp_path / "bad.yaml", STARVED.format(trace=trace, blocks=4))
    base = tmp_path / "base.json"
    r = CliRunner().invoke(app, ["regress", "--spec", str(good), "--baseline", str(base), "--update-baseline"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["regress", "--spec", str(bad), "--baseline", str(base)], env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    assert "3 regression(s)" in r.output and "failed regressed: 30 request(s) failed" in r.output
    # --update-baseline refuses to record the broken case, and leaves the good baseline as it was
    before = base.read_text()
    r = CliRunner().invoke(app, ["regress", "--spec", str(bad), "--baseline", str(base), "--update-baseline"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "error: case 'starved': 30 request(s) failed" in r.output, r.output
    assert base.read_text() == before


def test_baseline_is_strict_json_and_refuses_nan_in_a_compared_metric():
    from dynosim.sweeps.regress import baseline_json

    spec = _spec()
    text = baseline_json({"a": {"ttft_p50": 1.0, "goodput_rps": 2.0, "itl_p90": float("nan"), "failed": 0}}, spec)
    assert "NaN" not in text and json.loads(text)["cases"]["a"]["itl_p90"] is None      # not compared: null
    with pytest.raises(ValueError, match=r"case 'a': metric 'goodput_rps' is nan"):
        baseline_json({"a": {"ttft_p50": 1.0, "goodput_rps": float("nan"), "failed": 0}}, spec)


@pytest.mark.parametrize("value,why", [(None, "is null"), ("fast", "is not a finite number \\('fast'\\)"),
                                       ("missing", "is missing"), (float("nan"), "is not a finite number \\(nan\\)")])
def test_cli_a_bad_baseline_metric_names_file_case_and_metric(tmp_path, value, why):
    """A null or string baseline figure was a traceback (float(None)); a NaN one could never regress."""
    spec = ROOT / "examples" / "regress.yaml"
    data = json.loads((ROOT / "examples" / "regress_baseline.json").read_text())
    case = "kv-8-workers-x4"
    if value == "missing":
        del data["cases"][case]["ttft_p90"]
    else:
        data["cases"][case]["ttft_p90"] = value
    base = _write(tmp_path / "b.json", json.dumps(data))
    r = CliRunner().invoke(app, ["regress", "--spec", str(spec), "--baseline", str(base)], env={"COLUMNS": "300"})
    assert r.exit_code == 2, r.output
    assert f"error: {base}: case '{case}': metric 'ttft_p90'" in r.output
    import re
    assert re.search(why, r.output) and "Traceback" not in r.output


def test_cli_bad_spec_yaml_and_baseline_location_fail_before_any_case_runs(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "cases: [a\n")
    r = CliRunner().invoke(app, ["regress", "--spec", str(bad), "--baseline", str(tmp_path / "b.json")],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 2 and f"error: {bad}: not valid YAML (line 2, column 1: " in r.output, r.output
    r = CliRunner().invoke(app, ["regress", "--spec", str(tmp_path), "--baseline", str(tmp_path / "b.json")],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "is a directory" in r.output, r.output
    # the output location is checked first: a broken case would fail here if the cases ran
    spec = _write(tmp_path / "s.yaml", "cases: [{name: a, trace: missing.jsonl}]\n")
    for target, msg in ((tmp_path / "nope" / "b.json", f"the directory {tmp_path / 'nope'} does not exist"),
                        (tmp_path, "is a directory")):
        r = CliRunner().invoke(app, ["regress", "--spec", str(spec), "--baseline", str(target), "--update-baseline"],
                               env={"COLUMNS": "300"})
        assert r.exit_code == 2 and f"error: --baseline {target}: " in r.output and msg in r.output, r.output
    assert not (tmp_path / "nope").exists()
