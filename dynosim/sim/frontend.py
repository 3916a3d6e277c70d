"""The frontends moved to ``dynosim.deploy.frontend`` (clock-neutral, shared with ``validate``).

Re-exported here for code that still imports them from the simulator.
"""

from dynosim.deploy.frontend import DisaggFrontend, Frontend, TrafficCounters, _priority  # noqa: F401
