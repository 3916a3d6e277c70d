"""The same router, policy and engine objects on the wall clock (asyncio) and in virtual time.

The live side runs the cluster on ``WallClock`` inside an asyncio event loop
(sped up so the test takes about a second); the simulated side runs it on
simpy. Identical inputs must give identical routing decisions and token times.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from dynosim.clock import WallClock
from dynosim.config import RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.sim.simulation import build_cluster, simulate
from dynosim.traces.mooncake import load_trace


def _trace(tmp_path):
    rows = []
    for i in range(24):
        prefix = [100 + i % 3]  # three shared "system prompts"
        rows.append({"timestamp": 40 * i, "input_length": 64 * 6, "output_length": 6 + i % 5,
                     "hash_ids": prefix + [1000 + 10 * i + k for k in range(5)]})
    p = tmp_path / "live.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_trace(p, trace_block_size=64)


@pytest.mark.parametrize("mode", ["kv", "least-loaded", "round-robin"])
def test_wall_clock_and_virtual_time_make_identical_decisions(tmp_path, mode):
    trace = _trace(tmp_path)
    cfg = RunConfig(workers=3, router_mode=mode, trace_block_size=64, seed=7,
                    engine=MockerArgs(timing="fixed", timing_params={"prefill_ms": 12, "decode_ms": 4}))
    sim = simulate(trace, cfg)

    clock = WallClock(speed=2.0)  # 1 wall second = 2 virtual seconds; the trace spans ~1.1 s virtual
    cluster = build_cluster(trace, cfg, clock)

    async def live() -> None:
        clock.start()
        cluster.frontend.start()
        await clock.run()

    asyncio.run(live())
    live_reqs = sorted(cluster.frontend.requests, key=lambda r: r.line)
    sim_reqs = sorted(sim.requests, key=lambda r: r.line)
    assert [r.worker for r in live_reqs] == [r.worker for r in sim_reqs]
    assert [r.router_overlap for r in live_reqs] == [r.router_overlap for r in sim_reqs]
    assert [(r.first_token, r.last_token) for r in live_reqs] == [(r.first_token, r.last_token) for r in sim_reqs]
    assert all(r.status == "done" for r in live_reqs)
    # it really ran on the wall clock: events fired no earlier than due
    assert clock.wall_ms() >= max(r.last_token for r in live_reqs)
    if mode == "kv":
        assert sum(r.router_overlap for r in live_reqs) > 0  # KV events reached the live router's indexer
