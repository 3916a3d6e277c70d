"""A flag that would do nothing in the chosen mode is an error naming it, never silently dropped.

Each case is checked both ways: refused where it has no effect, taken (and visible in the result) where it has.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dynosim.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "traces" / "conversation_1k.jsonl"
runner = CliRunner()
BUNDLED = "h200_llama3.1-8b-fp8_vllm"


def run(*args: str):
    res = runner.invoke(app, ["run", "-t", str(SAMPLE), "--limit", "40", *args])
    return res, " ".join(res.output.split())  # rich wraps long lines


def refused(res, text, *needles):
    assert res.exit_code == 2, res.output
    assert text.startswith("error:") and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in text, (n, text)


@pytest.mark.parametrize("args,needles", [
    (["--kv-transfer-bandwidth", "10"], ["--kv-transfer-bandwidth has no effect without disaggregation"]),
    (["--kv-transfer-link", "nvlink", "--kv-transfer-contention"],
     ["--kv-transfer-link, --kv-transfer-contention have no effect without disaggregation"]),
    (["--prefill-workers", "1", "--decode-workers", "1", "--workers", "3"],
     ["--workers has no effect with disaggregation"]),
    (["--planner-target", "latency"], ["--planner-target has no effect without the planner", "--planner"]),
    (["--planner-gpu-budget", "8", "--planner-max-replicas", "2"], ["--planner-gpu-budget, --planner-max-replicas"]),
    (["--router-temperature", "0.5"], ["--router-temperature has no effect with --router-mode round-robin",
                                       "only the kv router reads it"]),
    (["--router-mode", "thompson", "--kv-overlap-score-credit", "0.5"], ["--kv-overlap-score-credit"]),
    (["--router-mode", "kv", "--device-types", "cpu,cuda"], ["only the device-aware-weighted router"]),
    (["--router-mode", "least-loaded", "--no-router-kv-events"], ["it keeps no KV index"]),
    (["--router-mode", "kv", "--router-ttl", "30"], ["--router-ttl has no effect while the router indexes"]),
    (["--router-queue-policy", "lcfs"], ["--router-queue-policy has no effect without --router-queue-threshold"]),
    (["--router-option", "variant=generalized"], ["--router-option: the round-robin router has no option variant",
                                                  "it takes none"]),
    (["--router-mode", "thompson", "--router-option", "varient=generalized"],
     ["no option varient", "it takes variant, preset, params"]),
    (["--router-mode", "kv", "--router-option", "temperature=0.3"],
     ["--router-option temperature: set it with --router-temperature"]),
    (["--nextn-accept-rates", "0.8"], ["--nextn-accept-rates has no effect without --nextn"]),
    (["--timing", "fixed", "--timing-profile", BUNDLED], ["--timing-profile has no effect with timing model fixed",
                                                          "aic, polynomial, interpolated"]),
    (["--timing-profile", "no-such-profile"], ["--timing-profile: no bundled profile named 'no-such-profile'",
                                               f"bundled: {BUNDLED}"]),
    (["--backend", "vllm"], ["--backend describe a worker's hardware: name --model and --system"]),
    (["--no-report"], ["--no-report has no effect without --out"]),
])
def test_run_refuses_flags_without_effect(args, needles):
    refused(*run(*args), *needles)


def test_run_takes_the_same_flags_where_they_act(tmp_path):
    res, _ = run("--prefill-workers", "1", "--decode-workers", "2", "--kv-transfer-bandwidth", "7", "--json")
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["run"]["config"]
    assert cfg["disagg"]["transfer"]["bandwidth_gbps"] == 7 and cfg["disagg"]["decode_workers"] == 2

    res, _ = run("--router-mode", "kv", "--no-router-kv-events", "--router-ttl", "30", "--router-temperature",
                 "0.5", "--router-queue-threshold", "2", "--router-queue-policy", "lcfs", "--json")
    assert res.exit_code == 0, res.output
    router = json.loads(res.stdout)["run"]["config"]["router"]
    assert (router["kv_events"], router["ttl_s"], router["temperature"], router["queue_policy"]) == \
        (False, 30, 0.5, "lcfs")

    res, _ = run("--router-mode", "thompson", "--router-option", "variant=generalized", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["run"]["config"]["router"]["policy_options"] == {"variant": "generalized"}

    res, _ = run("--planner", "--planner-target", "latency", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["run"]["config"]["planner"]["optimization_target"] == "latency"

    res, _ = run("--timing", "interpolated", "--timing-profile", BUNDLED, "--json")
    assert res.exit_code == 0, res.output


def test_a_config_file_switches_modes_on_and_the_flags_fill_in(tmp_path):
    """A disagg (planner) section in --config makes the transfer (planner) flags act on it; a flag the file
    also sets is overridden, and a warning says so."""
    cfg = tmp_path / "pd.yaml"
    cfg.write_text(yaml.safe_dump({"disagg": {"prefill_workers": 1, "decode_workers": 1,
                                              "transfer": {"latency_ms": 2.0}},
                                   "planner": {"max_gpu_budget": 6}, "router_mode": "kv"}))
    res, text = run("--config", str(cfg), "--kv-transfer-bandwidth", "9", "--planner-startup-s", "5",
                    "--router-temperature", "0.25", "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["run"]["config"]
    assert got["disagg"]["transfer"] == {**got["disagg"]["transfer"], "bandwidth_gbps": 9, "latency_ms": 2.0}
    assert got["planner"]["startup_time_s"] == 5 and got["planner"]["max_gpu_budget"] == 6
    assert got["router"]["temperature"] == 0.25
    assert "warning" not in text

    res, text = run("--config", str(cfg), "--kv-transfer-latency-ms", "1", "--planner-gpu-budget", "12", "--json")
    assert res.exit_code == 0, res.output
    assert f"warning: {cfg} also sets --kv-transfer-latency-ms (disagg.transfer.latency_ms), " \
           "--planner-gpu-budget (planner.max_gpu_budget): the file's values win" in text
    got = json.loads(res.stdout)["run"]["config"]
    assert got["disagg"]["transfer"]["latency_ms"] == 2.0 and got["planner"]["max_gpu_budget"] == 6

    res, text = run("--config", str(cfg), "--workers", "4")
    refused(res, text, "--workers has no effect with disaggregation")


def test_a_config_file_policy_option_the_router_ignores_is_an_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"router_mode": "kv", "router": {"policy_options": {"variant": "x"}}}))
    refused(*run("--config", str(cfg)), "the kv router has no option variant")


# -- validate and calibrate: every refusal comes before a server is launched or contacted ------------------

DEAD = "http://127.0.0.1:9"


def validate(*args: str):
    res = runner.invoke(app, ["validate", "-t", str(SAMPLE), "--limit", "5", *args])
    return res, " ".join(res.output.split())


@pytest.mark.parametrize("args,needles", [
    (["--endpoint", DEAD, "--device", "cuda"], ["--device has no effect when attaching (--endpoint)"]),
    (["--endpoint", DEAD, "--engine-arg", "--foo", "--startup-timeout", "5"],
     ["--startup-timeout, --engine-arg have no effect when attaching"]),
    (["--endpoint", DEAD, "--no-match-kv-capacity"], ["--no-match-kv-capacity has no effect when attaching"]),
    (["--endpoint", DEAD, "--prefill-workers", "1", "--decode-workers", "1"],
     ["--prefill-workers, --decode-workers have no effect when attaching", "--decode-endpoint"]),
    (["--endpoint", DEAD, "--workers", "3"], ["--workers has no effect when attaching"]),
    (["--endpoint", DEAD, "--gpus-per-worker", "2"], ["--gpus-per-worker has no effect when attaching without "
                                                      "--system"]),
    (["--launch", "vllm", "--model", "m", "--kv-events", "tcp://127.0.0.1:5557"],
     ["--kv-events has no effect with --launch"]),
    (["--launch", "vllm", "--model", "m", "--gpus-per-worker", "2"], ["--gpus-per-worker has no effect with "
                                                                      "--device cpu"]),
    (["--launch", "vllm", "--model", "m", "--prefill-workers", "1", "--decode-workers", "1", "--workers", "2"],
     ["--workers has no effect in a disaggregated launch"]),
    (["--endpoint", DEAD, "--router-mode", "round-robin", "--kv-events", "tcp://127.0.0.1:5557"],
     ["--kv-events has no effect with --router-mode round-robin"]),
    (["--endpoint", DEAD, "--router-mode", "random", "--no-router-kv-events"],
     ["--no-router-kv-events has no effect with --router-mode random"]),
    (["--endpoint", DEAD, "--no-router-kv-events", "--kv-events", "tcp://127.0.0.1:5557"],
     ["--kv-events has no effect with --no-router-kv-events"]),
    (["--endpoint", DEAD, "--router-mode", "round-robin", "--timing", "fixed", "--timing-profile", BUNDLED],
     ["--timing-profile has no effect with timing model fixed"]),
    (["--endpoint", DEAD, "--router-mode", "round-robin", "--timing-profile", "nope"],
     ["--timing-profile: no bundled profile named 'nope'", BUNDLED]),
])
def test_validate_refuses_flags_without_effect(args, needles):
    refused(*validate(*args), *needles)


@pytest.mark.parametrize("args,needles", [
    (["--endpoint", DEAD, "--max-num-seqs", "8", "--device", "cuda"],
     ["--device, --max-num-seqs have no effect when measuring a running server"]),
    (["--endpoint", DEAD, "--tp", "2"], ["--tp has no effect without --system"]),
    (["--endpoint", DEAD, "--backend", "vllm", "--kv-quant", "fp8"], ["--backend, --kv-quant have no effect"]),
])
def test_calibrate_refuses_flags_without_effect(tmp_path, args, needles):
    res = runner.invoke(app, ["calibrate", "--out", str(tmp_path / "p.yaml"), *args])
    refused(res, " ".join(res.output.split()), *needles)
    assert not (tmp_path / "p.yaml").exists()


def test_trace_synth_refuses_a_session_count_with_a_duration(tmp_path):
    out = tmp_path / "t.jsonl"
    res = runner.invoke(app, ["trace", "synth", str(out), "--sessions", "5", "--duration-s", "10"])
    refused(res, " ".join(res.output.split()), "--sessions has no effect with --duration-s")
    assert not out.exists()
    res = runner.invoke(app, ["trace", "synth", str(out), "--duration-s", "10"])
    assert res.exit_code == 0 and out.exists(), res.output


@pytest.mark.parametrize("args,needles", [
    (["--ray-address", "ray://head:10001"], ["--ray-address has no effect with --executor local"]),
    (["--executor", "serial", "--jobs", "2"], ["--jobs has no effect with --executor serial"]),
    (["--executor", "ray", "--ray-address", "ray://head:10001", "--jobs", "4"],
     ["--jobs has no effect with --ray-address"]),
    (["--load", "1,2", "--concurrency", "4"], ["--load has no effect with --concurrency"]),
])
def test_sweep_refuses_flags_without_effect(tmp_path, args, needles):
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", "-t", str(SAMPLE), "--out", str(out), *args])
    refused(res, " ".join(res.output.split()), *needles)
    assert not out.exists()
