"""deploy/: the routers of a deployment, built once from a RunConfig for the simulator and validate alike."""

from __future__ import annotations

from dynosim.config import RunConfig
from dynosim.deploy.routers import build_routers, router_params


def test_aggregated_router_follows_the_config():
    cfg = RunConfig(workers=3, router_mode="kv")
    routers = build_routers(cfg)
    assert list(routers) == ["workers"]
    r = routers["workers"]
    assert r.workers == [0, 1, 2]
    assert "policy_options" not in router_params(cfg)


def test_disaggregated_routers_prefill_configured_decode_on_decode_blocks():
    cfg = RunConfig(router_mode="kv", disagg={"prefill_workers": 2, "decode_workers": 5})
    routers = build_routers(cfg)
    assert list(routers) == ["prefill", "decode"]
    assert routers["prefill"].workers == [0, 1]
    assert routers["decode"].workers == list(range(5))
    assert type(routers["decode"].policy).__name__ == type(build_routers(RunConfig(router_mode="kv"))["workers"].policy).__name__
    assert not routers["decode"].wants_kv_events


def test_round_robin_deployment_decodes_round_robin():
    cfg = RunConfig(router_mode="round-robin", disagg={"prefill_workers": 1, "decode_workers": 2})
    assert type(build_routers(cfg)["decode"].policy).__name__ == type(build_routers(RunConfig(router_mode="round-robin"))["workers"].policy).__name__
