"""Routing policies, keyed by the names users type (``--router-mode``).

Owns the registry ``POLICIES`` (mode name -> policy class), its aliases, and the
policy options check (``check_policy_options``: a key the named policy does not
declare is an error naming the ones it takes). Each policy class declares the
``RoutingPolicy`` class attributes (``base``): ``name``, ``uses_overlap``,
``uses_load`` and ``options``. The Thompson router is three modules: the policy
(``thompson``), its parameters (``thompson_params``) and the agent hints it reads
(``dynosim.router.hints``).

May import: numpy, ``dynosim.request`` and ``dynosim.router``. Never simpy, aiohttp,
``dynosim.sim`` or ``dynosim.engines`` (``tests/test_house_rules.py``).
"""

from __future__ import annotations

from dynosim.router.policies.base import RoutingPolicy
from dynosim.router.policies.direct import DirectPolicy
from dynosim.router.policies.kv import KvPolicy
from dynosim.router.policies.load import DeviceAwareWeightedPolicy, LeastLoadedPolicy, PowerOfTwoPolicy
from dynosim.router.policies.random import RandomPolicy
from dynosim.router.policies.round_robin import RoundRobinPolicy
from dynosim.router.policies.thompson import ThompsonPolicy

# mode name -> policy class; each class declares name, uses_overlap, uses_load and options (``RoutingPolicy``)
POLICIES: dict[str, type[RoutingPolicy]] = {
    "round-robin": RoundRobinPolicy,
    "random": RandomPolicy,
    "least-loaded": LeastLoadedPolicy,
    "power-of-two-choices": PowerOfTwoPolicy,
    "device-aware-weighted": DeviceAwareWeightedPolicy,
    "kv": KvPolicy,
    "direct": DirectPolicy,
    "thompson": ThompsonPolicy,
}

ALIASES = {"round_robin": "round-robin", "rr": "round-robin", "kv_router": "kv", "kv-router": "kv",
           "least_loaded": "least-loaded", "power_of_two_choices": "power-of-two-choices", "p2c":
           "power-of-two-choices", "device_aware_weighted": "device-aware-weighted"}


def canonical_mode(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in POLICIES:
        raise ValueError(f"unknown router mode {name!r}; choose from {sorted(POLICIES)}")
    return key


def make_policy(name: str, seed: int = 0, **params: object) -> RoutingPolicy:
    return POLICIES[canonical_mode(name)](seed=seed, **params)


def policy_options(name: str) -> tuple[str, ...]:
    """The option keys the named policy reads (its declared ``options``)."""
    return POLICIES[canonical_mode(name)].options


def check_policy_options(name: str, keys) -> None:
    """Refuse option keys the named policy would ignore (a misspelling, or an option of another router)."""
    valid = policy_options(name)
    unknown = sorted(k for k in keys if k not in valid)
    if unknown:
        mode = canonical_mode(name)
        takes = f"it takes {', '.join(valid)}" if valid else "it takes none"
        raise ValueError(f"the {mode} router has no option {', '.join(unknown)} ({takes})")


__all__ = ["ALIASES", "POLICIES", "RoutingPolicy", "canonical_mode", "check_policy_options", "make_policy",
           "policy_options"]
