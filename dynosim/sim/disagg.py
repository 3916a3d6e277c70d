"""Disaggregated serving in the simulator: prefill pool → KV transfer → decode pool.

As Dynamo's offline disaggregated replay does it: each request first goes,
as a hidden one-token twin, through the prefill router to a prefill worker;
when the twin completes, the prefill router frees it (its KV blocks return
to the prefill worker's cache) and the KV hand-off starts. When the KV has
arrived (``TransferConfig``: ISL × bytes per token / bandwidth + latency,
optionally queued on a shared link) the original request, with its full
output length, is routed by the decode router (cost = decode blocks only) to
a decode worker, which allocates the prompt's KV without prefill time and
decodes. So TTFT = prefill queue + prefill + transfer + decode queue + first
decode pass. Prefix reuse is what the prefill side found cached.

The frontend doing this (``DisaggFrontend``), the routers and the wiring live in ``dynosim.deploy``,
shared with ``validate``; ``sim.simulation.build_cluster`` wires them to mocker workers.
"""

from __future__ import annotations

from dynosim.clock import Clock
from dynosim.config import RunConfig
from dynosim.deploy.frontend import DisaggFrontend  # noqa: F401  (re-exported: tests and callers patch it here)
from dynosim.sim.simulation import Cluster, build_cluster
from dynosim.traces.mooncake import Trace


def build_disagg_cluster(trace: Trace, cfg: RunConfig, clock: Clock) -> Cluster:
    """Wire frontend → prefill router → prefill workers → link → decode router → decode workers."""
    if cfg.disagg is None:
        raise ValueError("build_disagg_cluster needs a disaggregated RunConfig (cfg.disagg)")
    return build_cluster(trace, cfg, clock)
