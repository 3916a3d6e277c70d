"""Router queue: holds requests while every worker is saturated with prefill work.

A worker is busy when its pending prefill tokens exceed ``threshold ×
max_num_batched_tokens``; while all are busy, arrivals wait in a max-heap
keyed by the queue policy and the head is released as prefills and requests
complete (Dynamo's ``router_queue_threshold`` / ``router_queue_policy``):

- ``fcfs``: ``max(0, priority) − arrival_offset_s`` (earlier first, priority boosts);
- ``lcfs``: ``max(0, priority) + arrival_offset_s`` (latest first);
- ``wspt``: ``(1 + priority) / max(1, uncached prompt tokens)`` (shortest work first).

Equal keys leave in enqueue order.
"""

from __future__ import annotations

import heapq

from dynosim.request import Request

QUEUE_POLICIES = ("fcfs", "lcfs", "wspt")


class RouterQueue:
    def __init__(self, policy: str = "fcfs"):
        if policy not in QUEUE_POLICIES:
            raise ValueError(f"unknown router queue policy {policy!r}; choose from {list(QUEUE_POLICIES)}")
        self.policy = policy
        self._heap: list[tuple[float, int, Request]] = []
        self._seq = 0
        self.max_depth = 0
        self.enqueued = 0

    def __len__(self) -> int:
        return len(self._heap)

    def key(self, req: Request, now_ms: float, uncached_tokens: int) -> float:
        prio = max(0, req.priority)
        if self.policy == "fcfs":
            return prio - now_ms / 1000.0
        if self.policy == "lcfs":
            return prio + now_ms / 1000.0
        return (1 + prio) / max(1, uncached_tokens)

    def push(self, req: Request, now_ms: float, uncached_tokens: int) -> None:
        heapq.heappush(self._heap, (-self.key(req, now_ms, uncached_tokens), self._seq, req))
        self._seq += 1
        self.enqueued += 1
        self.max_depth = max(self.max_depth, len(self._heap))

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[2]
