"""Trace inspection figures, checked against the shared traces README and a brute-force count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from dynosim.traces.inspect import format_inspection, inspect_trace

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_1K = REPO / "examples" / "traces" / "conversation_1k.jsonl"
SHARED = REPO.parent / "shared" / "traces"


def brute_force_reuse(path: Path, trace_block_size: int = 512) -> tuple[float, float]:
    """Leading ids whose whole prefix was seen in an earlier request, by tokens and by blocks."""
    seen: set[tuple[int, ...]] = set()
    hit_blocks = all_blocks = hit_tokens = all_tokens = 0
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ids = r["hash_ids"]
        k = 0
        while k < len(ids) and tuple(ids[:k + 1]) in seen:
            k += 1
        seen.update(tuple(ids[:j + 1]) for j in range(len(ids)))
        hit_blocks += k
        all_blocks += len(ids)
        hit_tokens += min(k * trace_block_size, r["input_length"])
        all_tokens += r["input_length"]
    return hit_tokens / all_tokens, hit_blocks / all_blocks


def test_example_1k():
    d = inspect_trace(EXAMPLE_1K)
    assert d["n_requests"] == d["n_sessions"] == 1000
    assert d["span_s"] == 330.0 and d["rate_rps"] == pytest.approx(1000 / 330)
    assert d["isl"] == {"mean": 13732.944, "p50": 8431, "p90": 28845, "p99": 88258, "max": 121924}
    assert d["osl"] == {"mean": 349.357, "p50": 365, "p90": 599, "p99": 1005, "max": 2000}
    assert d["blocks_per_request"]["mean"] == pytest.approx(27.305)
    assert d["block_occurrences"] == 27305 and d["unique_hash_ids"] == 21514
    assert d["input_tokens"] == 13_732_944
    by_tokens, by_blocks = brute_force_reuse(EXAMPLE_1K)
    assert d["reuse_bound_tokens"] == pytest.approx(by_tokens) and by_tokens == pytest.approx(0.21574, abs=1e-5)
    assert d["reuse_bound_blocks"] == pytest.approx(by_blocks) and by_blocks == pytest.approx(0.21209, abs=1e-5)
    assert d["requests_reusing_2plus_blocks"] == 219


def test_sessions_counted(tmp_path):
    p = tmp_path / "s.jsonl"
    rows = [{"timestamp": 0, "session_id": "a", "output_length": 1, "hash_ids": [0, 1]},
            {"timestamp": 500, "output_length": 1, "hash_ids": [0, 2]},
            {"timestamp": 2000, "session_id": "a", "output_length": 1, "hash_ids": [0, 1, 3], "input_length": 1100}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    d = inspect_trace(p)
    assert d["n_requests"] == 3 and d["n_sessions"] == 2 and d["span_s"] == 2.0
    assert d["unique_hash_ids"] == 4 and d["block_occurrences"] == 7
    # hits: 0, then [0], then [0, 1] -> blocks 3/7; tokens (0 + 512 + 1024) / (1024 + 1024 + 1100)
    assert d["reuse_bound_blocks"] == pytest.approx(3 / 7)
    assert d["reuse_bound_tokens"] == pytest.approx(1536 / 3148)
    assert d["requests_reusing_2plus_blocks"] == 1


def test_format_inspection_renders():
    table = format_inspection(inspect_trace(EXAMPLE_1K))
    assert isinstance(table, Table)
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert "reuse bound (tokens)" in text and "0.216" in text and "13,733" in text


@pytest.mark.skipif(not (SHARED / "conversation_trace.jsonl").exists(),
                    reason=f"shared Mooncake trace not present under {SHARED}")
def test_full_conversation_matches_readme():
    d = inspect_trace(SHARED / "conversation_trace.jsonl")
    assert d["n_requests"] == d["n_sessions"] == 12_031
    assert d["span_s"] == pytest.approx(3536.999) and round(d["rate_rps"], 2) == 3.40
    assert round(d["isl"]["mean"]) == 12_035 and d["isl"]["p50"] == 6909 and d["isl"]["p90"] == 27_367
    assert d["isl"]["p99"] == 85_401 and d["isl"]["max"] == 126_195  # README's 85,400 is numpy's linear rule
    assert round(d["osl"]["mean"], 1) == 342.6 and d["osl"]["p50"] == 350 and d["osl"]["max"] == 2000
    assert round(d["blocks_per_request"]["mean"], 1) == 24.0 and d["blocks_per_request"]["p99"] == 167
    assert d["block_occurrences"] == 288_500 and d["unique_hash_ids"] == 182_790
    assert round(d["reuse_bound_tokens"], 3) == 0.374 and round(d["reuse_bound_blocks"], 3) == 0.366
    assert d["requests_reusing_2plus_blocks"] == 4658


@pytest.mark.skipif(not (SHARED / "synthetic_trace.jsonl").exists(),
                    reason=f"shared Mooncake trace not present under {SHARED}")
def test_full_synthetic_matches_readme():
    d = inspect_trace(SHARED / "synthetic_trace.jsonl")
    assert d["n_requests"] == 3993 and round(d["rate_rps"], 2) == 3.91
    assert d["block_occurrences"] == 121_877 and d["unique_hash_ids"] == 43_924
    assert round(d["reuse_bound_tokens"], 3) == 0.651 and round(d["reuse_bound_blocks"], 3) == 0.640
    assert d["requests_reusing_2plus_blocks"] == 1748
