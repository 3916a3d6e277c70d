"""The simulator: runs one deployment in virtual time with mocker engines.

Owns the virtual clock (``clock.SimClock`` on simpy), the worker that runs a
mocker scheduler's passes in that time (``worker.Worker``: pass by pass, or a
stretch of uniform decode passes in one event), the wiring of mocker workers
into ``dynosim.deploy.build_deployment`` and the run itself
(``simulation.simulate``; ``Parts`` lets tests pass their own worker,
scheduler or frontend classes), the planner's loop (``scaling``: observe, tick
``dynosim.planner``, execute) and the mocker's view for the planner
(``capacity``).

May import: simpy, numpy, pandas, ``dynosim.deploy``, ``dynosim.router``,
``dynosim.engines.mocker``, ``dynosim.planner``, ``dynosim.metrics``,
``dynosim.hardware``, ``dynosim.traces``, ``dynosim.config``,
``dynosim.clock``, ``dynosim.request``. Never ``dynosim.validate``,
``dynosim.engines.live`` or aiohttp (``tests/test_house_rules.py``).
"""
