"""Engine types by name: the registry the simulator builds every worker's scheduler from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conftest import load_rows
from dynosim.config import RunConfig
from dynosim.engines.mocker.config import MockerArgs
from dynosim.engines.mocker.contract import Scheduler
from dynosim.engines.mocker.registry import SCHEDULERS, scheduler_class
from dynosim.engines.mocker.scheduler import VllmScheduler
from dynosim.sim.simulation import Parts, simulate


def test_every_registered_engine_implements_the_scheduler_contract():
    assert SCHEDULERS["vllm"] is VllmScheduler
    for name, cls in SCHEDULERS.items():
        assert isinstance(cls(MockerArgs(engine_type=name)), Scheduler), name


def test_an_unknown_engine_type_is_refused_naming_the_known_ones():
    with pytest.raises(ValidationError, match=r"unknown engine_type 'sglang'; choose from vllm"):
        MockerArgs(engine_type="sglang")
    with pytest.raises(ValueError, match="choose from vllm"):
        scheduler_class("trtllm")


def test_the_simulator_builds_the_configured_engine_unless_parts_say_otherwise(tmp_path):
    rows = [{"timestamp": 10 * i, "input_length": 64, "output_length": 4, "hash_ids": [i]} for i in range(4)]
    trace = load_rows(tmp_path, rows, 128)
    cfg = RunConfig(workers=2, trace_block_size=128, engine=MockerArgs(block_size=16, num_gpu_blocks=64))
    st = simulate(trace, cfg)
    assert [type(w.sched) for w in st.workers] == [VllmScheduler, VllmScheduler]

    class Counted(VllmScheduler):
        pass

    st = simulate(trace, cfg, parts=Parts(scheduler=Counted))
    assert [type(w.sched) for w in st.workers] == [Counted, Counted]
    assert all(r.status == "done" for r in st.requests)
