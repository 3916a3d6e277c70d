"""Live engines: launch commands, an OpenAI-compatible streaming client, /metrics scraping, prompts from traces.

Only ``dynosim validate``/``calibrate`` use this package; the simulator never
imports it (``tests/test_house_rules.py``). ``client`` and ``metrics`` need
aiohttp, so they are imported from their modules, not re-exported here.

May import: aiohttp, zmq, msgpack, numpy, ``dynosim.router`` (hashing and the KV-event type) and
itself; tokenizers/transformers/torch only in the offline test-model helper. Never ``dynosim.sim``.
"""
