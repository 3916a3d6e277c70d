"""Sweeps: expand a grid of deployments, run them in parallel (resumably), find the Pareto frontier."""

from dynosim.sweeps.spec import SweepPoint, SweepSpec, expand

__all__ = ["SweepPoint", "SweepSpec", "expand"]
