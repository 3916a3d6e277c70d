"""NeMo Agent Toolkit agent hints of a request, parsed once, with NAT's defaults.

A trace row may carry NAT-style hints as ``row["nvext"]["agent_hints"]``::

    {"prefix_id": str, "total_requests": int,
     "osl": int tokens | "LOW"/"MEDIUM"/"HIGH", "iat": int ms | "LOW"/"MEDIUM"/"HIGH",
     "priority": int}

The frontend parses them once, when it makes the ``Request``
(``AgentHints.parse(row.extra, rid)`` into ``Request.agent``); the request's
priority and the ``thompson`` policy read the parsed object. Parsing never
fails: a missing or malformed hint takes NAT's default.

- ``prefix_id``: a unique ``auto-<rid>`` when missing or empty (so no stickiness);
- ``total_requests``: a finite number (numeric strings too), truncated to int; else 1;
- ``osl`` / ``iat``: a level name (any case, surrounding blanks ignored), or a
  finite number (numeric strings too) put in its level bucket (``OSL_CUTS`` in
  tokens, ``IAT_CUTS`` in ms); anything else ``MEDIUM``;
- ``priority``: an ``int`` (not a bool); anything else (``"3"``, ``2.0``) 0.

Imports nothing of dynosim (router rules: no simpy, aiohttp, simulator or engines).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LEVELS = ("LOW", "MEDIUM", "HIGH")
OSL_CUTS = (256, 1024)   # raw output tokens: < 256 LOW, < 1024 MEDIUM, else HIGH
IAT_CUTS = (100, 500)    # raw ms: < 100 LOW, < 500 MEDIUM, else HIGH
DEFAULT_LEVEL = "MEDIUM"
DEFAULT_TOTAL_REQUESTS = 1
DEFAULT_PRIORITY = 0


def finite_number(v: Any) -> float | None:
    """``v`` as a finite float: an int/float, or a string that parses as one; None otherwise (bools too)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _level(v: Any, cuts: tuple[float, float], default: str = DEFAULT_LEVEL) -> str:
    if isinstance(v, str) and v.strip().upper() in LEVELS:
        return v.strip().upper()
    x = finite_number(v)
    if x is None:
        return default
    return "LOW" if x < cuts[0] else "MEDIUM" if x < cuts[1] else "HIGH"


def osl_level(v: Any) -> str:
    """OSL hint → level: a level name (any case), or raw tokens (<256 LOW, <1024 MEDIUM, else HIGH)."""
    return _level(v, OSL_CUTS)


def iat_level(v: Any) -> str:
    """IAT hint → level: a level name (any case), or raw ms (<100 LOW, <500 MEDIUM, else HIGH)."""
    return _level(v, IAT_CUTS)


def raw_agent_hints(extra: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``extra["nvext"]["agent_hints"]`` when every level is a mapping, else ``{}``."""
    nvext = extra.get("nvext") if isinstance(extra, Mapping) else None
    hints = nvext.get("agent_hints") if isinstance(nvext, Mapping) else None
    return hints if isinstance(hints, Mapping) else {}


@dataclass(frozen=True, slots=True)
class AgentHints:
    """A request's agent hints with NAT's defaults filled in (see the module docstring)."""

    prefix_id: str
    total_requests: int
    osl: str        # LOW / MEDIUM / HIGH
    iat: str        # LOW / MEDIUM / HIGH
    priority: int

    @classmethod
    def parse(cls, extra: Mapping[str, Any] | None, rid: int) -> "AgentHints":
        """The hints in a trace row's extra fields (``Request.hints``) of request ``rid``."""
        h = raw_agent_hints(extra)
        pid = h.get("prefix_id")
        pid = str(pid) if pid is not None and str(pid) != "" else f"auto-{rid}"
        tr = finite_number(h.get("total_requests"))
        total = int(tr) if tr is not None else DEFAULT_TOTAL_REQUESTS
        p = h.get("priority")
        priority = p if isinstance(p, int) and not isinstance(p, bool) else DEFAULT_PRIORITY
        return cls(pid, total, osl_level(h.get("osl")), iat_level(h.get("iat")), priority)


__all__ = ["AgentHints", "IAT_CUTS", "LEVELS", "OSL_CUTS", "finite_number", "iat_level", "osl_level",
           "raw_agent_hints"]
