"""Sweeps: expand a grid of deployments, run them in parallel (resumably), find the Pareto frontier,
recommend one per load and gate regressions.

Owns the sweep spec and its expansion (``spec``), running points serially, on local processes or Ray
(``runner``, ``sweep``) into a resumable store (``store``), objectives (``objectives``), frontiers
(``pareto``), the recommendation (``recommend``), plots (``plots``) and the regression gate (``regress``).

May import: numpy, pandas, scipy, matplotlib, pydantic, yaml, ray (optional), the public ``dynosim.run``
path (``dynosim.sim``, ``dynosim.config``), ``dynosim.metrics``, ``dynosim.hardware``,
``dynosim.planner`` (config), ``dynosim.disagg``, ``dynosim.traces``. Never live code.
"""

from dynosim.sweeps.spec import SweepPoint, SweepSpec, expand

__all__ = ["SweepPoint", "SweepSpec", "expand"]
