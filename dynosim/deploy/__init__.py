"""One deployment, built once for both worlds (the simulator and ``validate``'s live replay).

Owns what a ``RunConfig`` says about the serving stack in front of the engines: the routers of
each pool (``routers``) and the frontends that admit trace arrivals, route them and chain session
turns (``frontend``), aggregated or disaggregated (prefill → KV hand-off → decode), and their
assembly with the KV-event plumbing (``assembly.build_deployment``: the worker factory and the
clock are parameters). Everything here takes a ``dynosim.clock.Clock`` and plain workers (anything
with ``submit(request)``), so the same objects run in virtual time (``dynosim.sim``) and on the wall clock (``dynosim.validate``).

May import: ``dynosim.config``, ``dynosim.clock``, ``dynosim.request``, ``dynosim.router``,
``dynosim.disagg``, ``dynosim.traces``. Never simpy, aiohttp, ``dynosim.sim``, ``dynosim.engines``
or ``dynosim.validate`` (``tests/test_house_rules.py`` checks it).
"""
