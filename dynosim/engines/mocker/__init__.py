"""The simulated engine (mocker): schedulers, their KV blocks and what a pass costs, on a logical clock.

Owns, by module:

- ``contract``: the seam. ``Scheduler`` (the protocol the simulator's worker, the planner's engine
  load, the timeline and the run summary read an engine through), ``KvPoolView`` and ``PassResult``.
  A second engine type (SGLang's, TRT-LLM's schedulers) is a new module here implementing
  ``Scheduler``, not a fork of ``scheduler``;
- ``registry``: engine types by the name a config gives (``MockerArgs.engine_type``) → scheduler class;
- ``scheduler``: ``VllmScheduler``, vLLM v1's policy: ``schedule() -> SchedulePlan`` (the decision,
  KV allocated), then ``apply(plan) -> PassResult`` (priced, tokens emitted, requests completed);
- ``block_manager``: ``KvBlockManager``, the per-request block tables (``Request.blocks`` /
  ``Request.partial``, written by nobody else), block identity, the prefix-hit cap, allocation and
  freeing;
- ``kv_cache``: ``KvCache``, the block pool under it: refcounts, prefix cache, LRU eviction, and the
  ``KvEvent``s (``dynosim.router.kv_event``) it reports to a sink;
- ``timing``: the pass-time models (polynomial, interpolated, aic, roofline) by name;
- ``config``: ``MockerArgs``, an engine's arguments.

May import: numpy, pydantic and yaml (``config``, profiles), ``dynosim.request``, ``dynosim.hardware``
(timing from the hardware database), ``dynosim.router.kv_event`` and ``dynosim.router.hashing``, and
itself. Never ``dynosim.sim``,
``dynosim.deploy``, ``dynosim.validate``, ``dynosim.engines.live``, simpy or aiohttp: time is the
caller's, and the same engine runs under any clock.
"""
