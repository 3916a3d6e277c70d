"""The planner: predicts load and sizes the pools in virtual (or wall) time.

Plain data in, replica counts out; no simpy and no aiohttp, so the simulator's
driver (``dynosim.sim.scaling``) and a live deployment can tick the same object.
"""

from dynosim.planner.config import PlannerConfig, SloConfig
from dynosim.planner.planner import Planner, PoolSpec

__all__ = ["Planner", "PlannerConfig", "PoolSpec", "SloConfig"]
