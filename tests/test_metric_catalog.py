"""The metric catalogue: one definition per figure, and every table that shows a figure reads it from there."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dynosim.config import RunConfig
from dynosim.metrics import catalog
from dynosim.metrics.catalog import BY_KEY, CATALOG, SWEEP_ROW, direction, flat_row, label
from dynosim.sim.simulation import simulate, summarize_state
from dynosim.traces.mooncake import load_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "examples" / "traces" / "conversation_1k.jsonl"


@pytest.fixture(scope="module")
def sim_summary() -> dict:
    trace = load_trace(TRACE, trace_block_size=512, limit=60)
    _, summary = summarize_state(simulate(trace, RunConfig(workers=2, router_mode="kv")))
    return summary


@pytest.fixture(scope="module")
def live_summary(tmp_path_factory) -> dict:
    """A measured summary: a short live replay through in-process fake vLLM servers (``LiveRun.summary``)."""
    from test_validate_replay import TBS, config, replay, sharing_rows

    from conftest import load_rows

    trace = load_rows(tmp_path_factory.mktemp("live"), sharing_rows(), tbs=TBS)
    run, _ = replay(trace, config("round-robin"))
    return run.summary()


def test_keys_are_unique_and_entries_complete():
    assert len(BY_KEY) == len(CATALOG)
    for m in CATALOG:
        assert m.path and m.label and m.direction in ("higher", "lower", None), m
    for view in (catalog.SWEEP_ROW, catalog.AGGREGATED, catalog.REGRESS_DEFAULT, catalog.VALIDATED,
                 catalog.VALIDATE_GATE):
        assert set(view) <= set(BY_KEY)


def test_a_sweep_row_has_exactly_the_catalogue_sweep_columns(sim_summary):
    from dynosim.sweeps.runner import METRIC_NAMES, metrics_row

    row = metrics_row(sim_summary)
    assert tuple(row) == SWEEP_ROW == METRIC_NAMES
    assert set(row) == {m.key for m in CATALOG if m.key in SWEEP_ROW}
    # every catalogue entry is a sweep column or one validate compares
    assert set(BY_KEY) == set(SWEEP_ROW) | set(catalog.VALIDATED)


def test_a_sweep_point_row_carries_the_catalogue_columns(tmp_path):
    from dynosim.sweeps.runner import run_point
    from dynosim.sweeps.spec import SweepSpec, expand

    spec = SweepSpec(gpu_budget=2, modes=["agg"], router_modes=["kv"], arrival_speedups=[1.0])
    point = expand(spec)[0]
    row = run_point(point, str(TRACE), limit=30)
    measured = [k for k in row if k not in point.labels and k not in ("id", "wall_s")]
    assert measured == list(SWEEP_ROW)


def test_aggregated_columns_come_from_the_catalogue():
    from dynosim.sweeps.pareto import METRICS

    assert METRICS == catalog.AGGREGATED and set(METRICS) <= set(SWEEP_ROW)


@pytest.mark.parametrize("which", ["sim_summary", "live_summary"])
def test_every_path_resolves_in_simulated_and_live_summaries(request, which):
    summary = request.getfixturevalue(which)
    for m in CATALOG:
        v = m.value(summary)                    # a KeyError here: the schemas drifted apart
        assert isinstance(v, (int, float)) and not isinstance(v, bool), (which, m.key, v)
    assert math.isfinite(catalog.get("ttft_p50", summary)) and summary["requests"]["completed"] > 0


def test_live_and_simulated_summaries_share_one_schema(sim_summary, live_summary):
    def shape(d, prefix=()):
        out = set()
        for k, v in d.items():
            out |= shape(v, prefix + (k,)) if isinstance(v, dict) and k != "per_worker" else {prefix + (k,)}
        return out

    # the measured figures: everything collector.summarize writes (the simulator adds a description of the
    # simulated hardware, the live run one of its servers; those are not figures)
    import numpy as np

    from dynosim.metrics.collector import requests_frame, summarize

    figures = shape(summarize(requests_frame([]), np.zeros(0), np.zeros(0, np.int64), 1))
    assert figures <= shape(sim_summary)
    missing = figures - shape(live_summary)
    assert not missing, f"the live summary lacks {sorted(missing)}"
    assert "goodput" in live_summary and "preemptions" in live_summary


def test_flat_row_reads_each_path(sim_summary):
    row = flat_row(sim_summary)
    assert row["ttft_p90"] == sim_summary["ttft_ms"]["p90"]
    assert row["goodput_rps"] == sim_summary["goodput"]["requests_per_s"]
    assert row["failed"] == sim_summary["requests"]["failed"]


def test_regress_directions_and_names_come_from_the_catalogue():
    from dynosim.sweeps import regress

    assert regress.DEFAULT_METRICS == list(catalog.REGRESS_DEFAULT)
    assert regress.COMPARABLE == {k for k in SWEEP_ROW if direction(k) is not None}
    assert regress.direction is catalog.direction   # regress judges by the catalogue's directions, no copy
    for m in CATALOG:
        assert m.regress_default == (m.key in regress.DEFAULT_METRICS)


def test_regress_judges_by_the_catalogue_direction(monkeypatch):
    from dynosim.sweeps import regress

    spec = regress.RegressSpec(metrics=["ttft_p50", "output_tps"],
                               cases=[regress.RegressCase(name="c", trace="t.jsonl")])
    base = {"c": {"ttft_p50": 100.0, "output_tps": 100.0, "failed": 0}}
    cur = {"c": {"ttft_p50": 120.0, "output_tps": 120.0, "failed": 0}}
    t = regress.compare(spec, base, cur).table.set_index("metric")["status"]
    assert t["ttft_p50"] == "REGRESSED" and t["output_tps"] == "improved"
    # flip the catalogue's direction of one metric: regress follows it
    monkeypatch.setattr(regress, "direction", lambda k: "higher" if k == "ttft_p50" else catalog.direction(k))
    t = regress.compare(spec, base, cur).table.set_index("metric")["status"]
    assert t["ttft_p50"] == "improved"


@pytest.mark.parametrize("bad", ["ttft_p95", "num_gpus", "e2e_mean", "request_rate"])
def test_an_unknown_regress_metric_names_the_valid_ones(bad):
    from dynosim.sweeps import regress

    with pytest.raises(ValueError) as e:
        regress.RegressSpec(metrics=[bad], cases=[regress.RegressCase(name="c", trace="t.jsonl")])
    msg = str(e.value)
    assert f"unknown metric {bad!r}" in msg and "ttft_p90" in msg and "output_tps_per_gpu" in msg


def test_validate_compares_catalogue_keys_with_catalogue_labels(sim_summary):
    from dynosim.validate.compare import DEFAULT_GATE, METRIC_KEYS, compare

    assert METRIC_KEYS == catalog.VALIDATED and DEFAULT_GATE == catalog.VALIDATE_GATE
    assert "requests_per_s" in METRIC_KEYS and "request_rate" not in METRIC_KEYS
    table = compare(sim_summary, sim_summary)
    assert list(table["metric"]) == list(catalog.VALIDATED)
    assert list(table["label"]) == [label(k, unit=True) for k in catalog.VALIDATED]
    assert table["ok"].all()
    assert dict(zip(table["metric"], table["error_kind"]))["prefix_reuse"] == "abs"


def test_labels_shown_by_plots_report_and_objectives_come_from_the_catalogue():
    from dynosim.report.figures import OBJECTIVE_LABELS, POINT_FIGURES
    from dynosim.sweeps.objectives import OBJECTIVES
    from dynosim.sweeps.plots import LABELS

    assert LABELS == {"tps_user_mean": "tokens/s/user (mean)", "ttft_p90": "TTFT p90 (ms)",
                      "output_tps_per_gpu": "output tokens/s/GPU"}
    assert POINT_FIGURES["output_tps_per_gpu"] == ("tokens/s/GPU", "", 1)
    assert POINT_FIGURES["goodput_rps"] == ("goodput", " req/s", 3)
    assert OBJECTIVE_LABELS["itl_mean_ms"] == "ITL mean"
    for o in OBJECTIVES:
        assert o.column in SWEEP_ROW and o.label == label(o.column)


def test_report_table_heads_and_decimals_come_from_the_catalogue():
    from dynosim.metrics.catalog import head
    from dynosim.report.sweep_page import BEST_FIGURES, POINT_TABLE

    assert [(k, h, d) for k, h, d in POINT_TABLE] == [(k, head(k), BY_KEY[k].decimals) for k, _, _ in POINT_TABLE]
    assert [h for _, h, _ in POINT_TABLE][:4] == ["tokens/s/GPU", "tokens/s/user", "TTFT p50 ms", "TTFT p90 ms"]
    assert set(BEST_FIGURES) <= set(SWEEP_ROW)


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(KeyError, match="choose from"):
        label("ttft_p95")


def test_token_gaps_live_in_metrics_and_the_worker_uses_them():
    from dynosim.metrics.token_gaps import TokenGaps
    from dynosim.sim import worker

    assert worker.TokenGaps is TokenGaps
