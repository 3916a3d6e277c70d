"""Routing policies, keyed by the names users type (``--router-mode``)."""

from __future__ import annotations

from typing import Callable

from dynosim.router.policies.base import RoutingPolicy
from dynosim.router.policies.random import RandomPolicy
from dynosim.router.policies.round_robin import RoundRobinPolicy

POLICIES: dict[str, Callable[..., RoutingPolicy]] = {
    "round-robin": RoundRobinPolicy,
    "random": RandomPolicy,
}

ALIASES = {"round_robin": "round-robin", "rr": "round-robin"}


def make_policy(name: str, seed: int = 0) -> RoutingPolicy:
    key = ALIASES.get(name, name)
    try:
        factory = POLICIES[key]
    except KeyError:
        raise ValueError(f"unknown router mode {name!r}; choose from {sorted(POLICIES)}") from None
    return factory(seed=seed)


__all__ = ["POLICIES", "RoutingPolicy", "make_policy"]
