"""Engines behind a worker slot: simulated (``mocker``: scheduler, KV cache, pass timing) and live
(``live``: launch commands, a streaming client, metrics and KV-event listeners).

May import: ``dynosim.hardware``, ``dynosim.request``, ``dynosim.router`` (hashing, KV events) and
their own package. ``mocker`` never imports ``live`` or aiohttp; neither imports ``dynosim.sim``,
``dynosim.deploy`` or ``dynosim.validate``.
"""
