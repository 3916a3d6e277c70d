"""Validation against live engines: the same trace and deployment on live workers, measured vs predicted.

Owns the live replay on the wall clock (the deployment comes from ``dynosim.deploy``, the workers are
live endpoints), launching and watching local servers, comparing measured and predicted summaries per
metric, the ``validate`` workflow, and timing calibration (measure passes, fit, write a profile).

May import: aiohttp, numpy, pandas, matplotlib, yaml, ``dynosim.deploy``, ``dynosim.router``,
``dynosim.engines.live``, ``dynosim.metrics``, ``dynosim.traces``, ``dynosim.config``, ``dynosim.clock``,
and the simulator only through its public entry points (to predict). The simulator never imports this
package (``tests/test_house_rules.py``).
"""
