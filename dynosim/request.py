"""The request: what a trace row becomes inside the simulator.

One mutable object per request carries its identity, its prompt as block
hashes, its engine progress and its lifecycle timestamps (virtual ms), so the
hot path touches one object and the metrics read the same fields afterwards.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from dynosim.router.hints import AgentHints


class RequestStatus(StrEnum):
    """Where a request is in its life. A ``StrEnum``: frames and CSVs hold the plain value."""

    PENDING = "pending"            # created, or released by the router's queue, not yet on an engine
    QUEUED = "queued"              # held in the router's queue (every worker over the busy threshold)
    WAITING = "waiting"            # on an engine, not admitted (or preempted back to waiting)
    RUNNING = "running"            # admitted: holds KV blocks, runs in passes
    TRANSFERRING = "transferring"  # disaggregated: prefill done, KV on its way to decode
    DONE = "done"                  # every output token delivered
    FAILED = "failed"              # ended without its output; ``Request.failure`` says why

    @property
    def ended(self) -> bool:
        return self is RequestStatus.DONE or self is RequestStatus.FAILED


class Request:
    __slots__ = (
        # identity and shape
        "rid", "session", "turn", "line", "isl", "osl", "hash_ids", "seq_hashes", "priority", "hints", "agent",
        # lifecycle (virtual ms; nan until it happens)
        "arrival", "routed", "first_token", "last_token", "worker", "router_overlap", "router_score",
        # engine progress
        "computed", "generated", "blocks", "partial", "reused", "first_reused", "admitted", "preemptions",
        "status", "failure",
    )

    def __init__(self, rid: int, isl: int, osl: int, hash_ids: tuple[int, ...], seq_hashes: list[int],
                 arrival: float, session: str = "", turn: int = 0, line: int = 0, priority: int = 0,
                 hints: dict | None = None, agent: AgentHints | None = None):
        self.rid = rid
        self.session = session
        self.turn = turn
        self.line = line
        self.isl = isl
        self.osl = osl
        self.hash_ids = hash_ids
        self.seq_hashes = seq_hashes
        self.priority = priority
        self.hints = hints if hints is not None else {}   # the trace row's extra fields, raw
        self.agent = agent   # its nvext.agent_hints, parsed once by the frontend (None: not parsed)
        self.arrival = arrival
        self.routed = math.nan
        self.first_token = math.nan
        self.last_token = math.nan
        self.worker = -1
        self.router_overlap = 0   # prefix blocks the router believed cached on the chosen worker
        self.router_score = math.nan  # the chosen worker's routing cost (KV policies)
        self.computed = 0       # prompt+output tokens whose KV is computed
        self.generated = 0      # output tokens emitted
        # the block table (engines.mocker.block_manager.KvBlockManager is its only writer)
        self.blocks: list[int] = []  # full blocks held, in sequence order
        self.partial = False    # holds one partial (unshared) tail block
        self.reused = 0         # prompt tokens served from the prefix cache (max over admissions)
        self.first_reused = 0   # the same at first admission
        self.admitted = False
        self.preemptions = 0
        self.status = RequestStatus.PENDING
        self.failure: str | None = None   # why it failed (FAILED only), one line for people

    def fail(self, reason: str) -> None:
        """End this request as failed, saying why."""
        self.status = RequestStatus.FAILED
        self.failure = reason

    @property
    def seq_len(self) -> int:
        return self.isl + self.generated

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Request(rid={self.rid}, isl={self.isl}, osl={self.osl}, computed={self.computed}, "
                f"generated={self.generated}, blocks={len(self.blocks)}, status={self.status})")
