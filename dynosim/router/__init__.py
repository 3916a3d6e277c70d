"""The KV-aware router, the same code in the simulator and in ``validate``'s live replay.

Owns block hashing (``hashing``), the one KV-event type every engine reports in
(``kv_event``: mocker, live listener and indexer alike), the radix-style KV
indexer fed by those events (``indexer``), parsed agent hints (``hints``), the per-worker load a router predicts
(``active_load``), the busy-threshold queue (``queue``), what a policy sees at
a decision (``context``), the routing policies keyed by ``--router-mode``
names (``policies``) and the ``Router`` that ties them together.

May import: numpy, xxhash, ``dynosim.request`` and itself. Never simpy,
aiohttp, ``dynosim.sim`` or ``dynosim.engines`` (``tests/test_house_rules.py``):
it runs on any clock and learns of engines only through KV events and
metrics callbacks.
"""
