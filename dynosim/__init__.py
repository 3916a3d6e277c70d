"""dynosim: a discrete-event twin of the Dynamo LLM serving stack.

``dynosim.run(trace, workers=..., router_mode=...)`` replays a Mooncake-style
trace through simulated vLLM-style engines and returns a ``RunResult`` with a
summary dict and a per-request pandas frame.
"""

__version__ = "0.1.0"

from dynosim.api import RunResult, run  # noqa: E402
from dynosim.config import RunConfig  # noqa: E402
from dynosim.engines.mocker.config import MockerArgs  # noqa: E402

__all__ = ["MockerArgs", "RunConfig", "RunResult", "run", "__version__"]
