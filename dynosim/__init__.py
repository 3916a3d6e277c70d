"""dynosim: a discrete-event twin of the Dynamo LLM serving stack.

``dynosim.run(trace, workers=..., router_mode=...)`` replays a Mooncake-style
trace through simulated vLLM-style engines and returns a ``RunResult`` with a
summary dict and a per-request pandas frame.

The public names load on first use, so code that only needs the shared parts
(the live replay imports ``dynosim.request``, ``dynosim.router``, ``dynosim.deploy``)
never loads the simulator or simpy.

May import (lazily): ``dynosim.api``, ``dynosim.config``, ``dynosim.engines.mocker.config``. The
package map and each package's own import rules are in README's Layout and the packages' docstrings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {"run": "dynosim.api", "RunResult": "dynosim.api", "RunConfig": "dynosim.config",
           "MockerArgs": "dynosim.engines.mocker.config"}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from dynosim.api import RunResult, run
    from dynosim.config import RunConfig
    from dynosim.engines.mocker.config import MockerArgs


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'dynosim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = ["MockerArgs", "RunConfig", "RunResult", "run", "__version__"]
