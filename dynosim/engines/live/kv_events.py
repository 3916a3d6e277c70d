"""vLLM KV-cache events (ZMQ PUB, msgpack) translated into the router's block hashes.

A vLLM server started with ``--kv-events-config '{"enable_kv_cache_events":
true, "publisher": "zmq", "endpoint": "tcp://127.0.0.1:PORT"}'`` CONNECTs its
PUB socket to that endpoint (it binds only for ``*``/``::``/ipc/inproc
endpoints), so ``KvEventListener`` BINDs a SUB socket there. Each message is
``[topic, seq (8-byte big-endian), msgpack batch]``; the batch is ``[ts,
[events...], dp_rank?]`` (or the same as a map). vLLM 0.32 encodes events as
maps with a ``type`` tag; older releases as tagged arrays (``["BlockStored",
block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
...]``). Both are accepted.

vLLM's block hashes are not dynosim's, and the router indexes dynosim
sequence hashes (``dynosim.router.hashing``) of the prompts the replay sends.
Like Dynamo's KV publisher, ``HashTranslator`` recomputes each stored block's
hash from the event's ``token_ids`` and chains it from the parent's dynosim
hash, found in a map vLLM hash -> dynosim hash built from earlier events.
Nothing is guessed: a block whose parent was never seen (events lost) or a
removal of an unknown hash is counted in ``KvEventStats`` and skipped.

Deliberately not indexed (counted instead): events for another ``medium``
than "GPU" (CPU offload tiers; vLLM says "GPU" on CPU too), LoRA blocks
(vLLM's hashes include the adapter, dynosim's do not, so they would collide
with the base model's blocks; their later removals count as
``unknown_removed``), and KV-cache groups other than the first (hybrid
models: dynosim models one attention type). ``extra_keys`` (multimodal
hashes, cache salt) are ignored: such blocks index under their tokens alone.

Stored copies are reference-counted per dynosim hash: vLLM can hold two
blocks with the same hash (two requests computing it at once), and two
vLLM hashes can share a dynosim hash (same tokens, different extra keys);
the router hears "removed" only when the last copy goes.

What comes out is ``dynosim.router.kv_event.KvEvent``, the type the mocker
emits too: ``on_event(worker, event)`` has the signature of
``Router.on_kv_event``. ``AllBlocksCleared`` becomes one ``REMOVED`` of every
block this worker held.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from dynosim.router.hashing import block_hashes_of_tokens, next_sequence_hash
from dynosim.router.kv_event import REMOVED, STORED, KvEvent

OnEvent = Callable[[int, KvEvent], None]   # (worker, event): Router.on_kv_event

MAX_ERRORS = 10
_GPU_MEDIA = (None, "GPU")
# Positions of the fields in the tagged-array encoding (index 0 is the tag).
_ARRAY_FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
                    "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind"),
    "BlockRemoved": ("block_hashes", "medium", "group_idx"),
    "AllBlocksCleared": (),
}


class KvEventListenerError(RuntimeError):
    """The listener could not start (bad endpoint, port in use, started twice)."""


class MalformedEvent(ValueError):
    """An event or batch that does not follow vLLM's wire format."""


@dataclass
class KvEventStats:
    """Counters of one listener (or translator). Block counts are dynosim blocks."""

    batches: int = 0
    events: int = 0
    stored_blocks: int = 0        # blocks forwarded as stored
    removed_blocks: int = 0       # blocks forwarded as removed (last copy gone), AllBlocksCleared excluded
    cleared: int = 0              # AllBlocksCleared events
    malformed: int = 0            # malformed batches + malformed events (skipped whole)
    unknown_parent: int = 0       # BlockStored events skipped: parent never seen
    unknown_removed: int = 0      # removed vLLM hashes that were never mapped
    ignored_medium: int = 0       # events for a medium other than GPU
    ignored_lora: int = 0         # BlockStored events of a LoRA adapter
    ignored_group: int = 0        # events for a KV-cache group other than the first
    callback_errors: int = 0      # exceptions raised by on_event
    seq_gaps: int = 0             # sequence numbers missing between consecutive batches
    seq_resets: int = 0           # a sequence number at or below the previous one (publisher restarted?)
    first_seq: int | None = None  # > 0: batches were published before we listened
    last_seq: int | None = None
    last_ts: float | None = None  # the publisher's timestamp (time.time() s) of the last batch
    first_event_wall_ms: float | None = None  # time.time() ms when the first batch arrived
    publisher_connected: bool | None = None   # a publisher had connected before the replay started
    errors: list[str] = field(default_factory=list)  # the first MAX_ERRORS messages

    def error(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode_event(event: Any) -> tuple[str, dict[str, Any]]:
    """(type tag, fields) of a map- or array-encoded event; raises ``MalformedEvent``."""
    if isinstance(event, dict):
        fields = {_text(k): v for k, v in event.items()}
        tag = _text(fields.pop("type", None))
        if tag not in _ARRAY_FIELDS:
            raise MalformedEvent(f"unknown event type {tag!r}")
        return tag, fields
    if isinstance(event, (list, tuple)) and event:
        tag = _text(event[0])
        names = _ARRAY_FIELDS.get(tag) if isinstance(tag, str) else None
        if names is None:
            raise MalformedEvent(f"unknown event type {tag!r}")
        return tag, dict(zip(names, event[1:]))
    raise MalformedEvent(f"event is neither a map nor a tagged array: {_brief(event)}")


def decode_batch(payload: bytes) -> tuple[float | None, list[Any]]:
    """(ts, events) of one msgpack batch ``[ts, events, dp_rank?]`` or ``{ts, events, ...}``."""
    try:
        batch = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedEvent(f"undecodable msgpack payload ({len(payload)} bytes): {exc}") from None
    if isinstance(batch, dict):
        batch = {_text(k): v for k, v in batch.items()}
        ts, events = batch.get("ts"), batch.get("events")
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        ts, events = batch[0], batch[1]
    else:
        raise MalformedEvent(f"batch is not [ts, events, ...]: {_brief(batch)}")
    if not isinstance(events, (list, tuple)):
        raise MalformedEvent(f"batch events is not a list: {_brief(events)}")
    if ts is not None and not isinstance(ts, (int, float)):
        raise MalformedEvent(f"batch ts is not a number: {_brief(ts)}")
    return ts, list(events)


def _brief(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _hash_list(fields: dict[str, Any], tag: str) -> list:
    hashes = fields.get("block_hashes")
    if not isinstance(hashes, (list, tuple)):
        raise MalformedEvent(f"{tag}: block_hashes is not a list: {_brief(hashes)}")
    for h in hashes:
        if not isinstance(h, (int, bytes, str)):
            raise MalformedEvent(f"{tag}: block hash {_brief(h)} is not an int or bytes")
    return list(hashes)


class HashTranslator:
    """vLLM block hashes -> dynosim sequence hashes for one worker, without any I/O.

    ``translate(event)`` returns the router updates an event implies and never
    raises for bad input: malformed events are counted in ``stats`` (with the
    first few messages) and change nothing.
    """

    def __init__(self, block_size: int, stats: KvEventStats | None = None):
        if type(block_size) is not int or block_size <= 0:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.block_size = block_size
        self.stats = stats if stats is not None else KvEventStats()
        self._seq_of: dict[Any, int] = {}   # vLLM hash -> dynosim sequence hash
        self._copies: dict[Any, int] = {}   # vLLM hash -> stored copies not yet removed
        self._refs: dict[int, int] = {}     # dynosim hash -> stored copies over all vLLM hashes

    def held_blocks(self) -> int:
        """Distinct vLLM blocks currently mapped (stored and not removed)."""
        return len(self._seq_of)

    def seq_hash_of(self, vllm_hash: Any) -> int | None:
        return self._seq_of.get(vllm_hash)

    def translate(self, event: Any) -> list[KvEvent]:
        stats = self.stats
        stats.events += 1
        try:
            tag, fields = decode_event(event)
            if tag == "AllBlocksCleared":
                return self._clear()
            medium = _text(fields.get("medium"))
            if medium not in _GPU_MEDIA:
                stats.ignored_medium += 1
                return []
            if fields.get("group_idx") not in (None, 0):
                stats.ignored_group += 1
                return []
            if tag == "BlockStored":
                return self._stored(fields)
            return self._removed(fields)
        except MalformedEvent as exc:
            stats.malformed += 1
            stats.error(str(exc))
            return []

    def _stored(self, fields: dict[str, Any]) -> list[KvEvent]:
        stats, bs = self.stats, self.block_size
        hashes = _hash_list(fields, "BlockStored")
        tokens = fields.get("token_ids")
        if not isinstance(tokens, (list, tuple)):
            raise MalformedEvent(f"BlockStored: token_ids is not a list: {_brief(tokens)}")
        event_bs = fields.get("block_size", bs)
        if event_bs != bs:
            raise MalformedEvent(f"BlockStored: block_size {event_bs!r} in the event, the listener expects {bs} "
                                 "(start vLLM with the simulator's --block-size)")
        if len(tokens) != len(hashes) * bs:
            raise MalformedEvent(f"BlockStored: {len(tokens)} token_ids for {len(hashes)} blocks of {bs}")
        if fields.get("lora_id") is not None or fields.get("lora_name") is not None:
            stats.ignored_lora += 1
            return []
        parent = fields.get("parent_block_hash")
        if parent is None:
            parent_seq = None
        else:
            parent_seq = self._seq_of.get(parent) if isinstance(parent, (int, bytes, str)) else None
            if parent_seq is None:
                stats.unknown_parent += 1
                return []
        if not hashes:
            return []
        try:
            local, _ = block_hashes_of_tokens(tokens, bs)
        except (OverflowError, TypeError, ValueError) as exc:
            raise MalformedEvent(f"BlockStored: token_ids are not u32 token ids: {exc}") from None
        seq: list[int] = []
        prev = parent_seq
        for lh in local:
            prev = lh if prev is None else next_sequence_hash(prev, lh)
            seq.append(prev)
        for vh, sh in zip(hashes, seq):
            # A re-stored vLLM hash keeps its first mapping (same tokens, same parent: same value).
            sh = self._seq_of.setdefault(vh, sh)
            self._copies[vh] = self._copies.get(vh, 0) + 1
            self._refs[sh] = self._refs.get(sh, 0) + 1
        stats.stored_blocks += len(seq)
        return [KvEvent(STORED, tuple(seq), parent_seq)]

    def _removed(self, fields: dict[str, Any]) -> list[KvEvent]:
        gone: list[int] = []
        for vh in _hash_list(fields, "BlockRemoved"):
            sh = self._seq_of.get(vh)
            if sh is None:
                self.stats.unknown_removed += 1
                continue
            copies = self._copies[vh] - 1
            if copies:
                self._copies[vh] = copies
            else:
                del self._copies[vh], self._seq_of[vh]
            refs = self._refs[sh] - 1
            if refs:
                self._refs[sh] = refs
            else:
                del self._refs[sh]
                gone.append(sh)
        self.stats.removed_blocks += len(gone)
        return [KvEvent(REMOVED, tuple(gone), None)] if gone else []

    def _clear(self) -> list[KvEvent]:
        self.stats.cleared += 1
        gone = list(self._refs)
        self._seq_of.clear()
        self._copies.clear()
        self._refs.clear()
        return [KvEvent(REMOVED, tuple(gone), None)] if gone else []


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (binding ``tcp://host:*`` avoids the race)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if the listener can bind it, else ``ValueError`` saying what a KV event endpoint looks like.

    Accepted: ``tcp://HOST:PORT`` (PORT a number 1-65535, or ``*`` for a free
    one; HOST a name, an IPv4 address, ``[IPv6]`` or ``*``), ``ipc://PATH``.
    """
    want = "expected tcp://HOST:PORT (where the engine publishes, e.g. tcp://127.0.0.1:5557) or ipc://PATH"
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"not a ZMQ endpoint: {want}")
    if scheme != "tcp":
        if not rest:
            raise ValueError(f"{scheme}:// needs a path: {want}")
        return endpoint
    host, colon, port = rest.rpartition(":")
    if not colon or not host or (host.startswith("[") != host.endswith("]")):
        raise ValueError(f"no host and port: {want}")
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port {port!r} is not a number in 1-65535 (or *): {want}")
    return endpoint


class KvEventListener:
    """Binds a ZMQ SUB socket where one vLLM worker publishes and feeds its events to ``on_event``.

    ``on_event(worker, event)`` (a ``KvEvent``) has the signature of
    ``Router.on_kv_event``, so ``KvEventListener(ep, worker=0,
    block_size=32, on_event=router.on_kv_event)`` keeps a router's indexer in
    step with the engine. It runs in the event loop's thread, between awaits,
    so it needs no locking. Malformed input and exceptions from ``on_event``
    are counted in ``stats``; they never stop the reader.

    ``endpoint`` may end in ``:*`` to bind a free port; ``bound_endpoint``
    then says which (give that to vLLM).
    """

    def __init__(self, endpoint: str, worker: int, block_size: int, on_event: OnEvent, *,
                 context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.worker = worker
        self.on_event = on_event
        self.stats = KvEventStats()
        self.translator = HashTranslator(block_size, self.stats)
        if context is not None and not isinstance(context, zmq.asyncio.Context):
            context = zmq.asyncio.Context(context)  # shadows it: same sockets, asyncio API
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None
        self._monitor_task: asyncio.Task | None = None
        self.bound_endpoint: str | None = None
        self.peers = 0                  # publishers whose ZMTP handshake with us completed

    @property
    def block_size(self) -> int:
        return self.translator.block_size

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def held_blocks(self) -> int:
        return self.translator.held_blocks()

    async def start(self) -> None:
        """Bind and start reading; raises ``KvEventListenerError`` naming the endpoint if the bind fails."""
        if self._socket is not None:
            raise KvEventListenerError(f"KV event listener on {self.endpoint} is already started")
        ctx = self._context if self._context is not None else zmq.asyncio.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise KvEventListenerError(f"cannot bind the KV event listener to {self.endpoint}: {exc}") from None
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._socket = sock
        loop = asyncio.get_running_loop()
        self._monitor_task = loop.create_task(self._watch_peers(sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)), name=f"kv-events peers {self.endpoint}")
        self._task = loop.create_task(self._read(), name=f"kv-events {self.endpoint}")

    async def _watch_peers(self, monitor: zmq.asyncio.Socket) -> None:
        from zmq.utils.monitor import parse_monitor_message

        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.peers += 1
                elif event == zmq.EVENT_DISCONNECTED:
                    self.peers = max(0, self.peers - 1)
        except zmq.ZMQError:  # the socket was closed under the monitor
            return
        finally:
            monitor.close(linger=0)

    async def wait_connected(self, timeout_s: float = 10.0, settle_s: float = 0.2) -> bool:
        """Wait until a publisher has connected and can see our subscription; False on timeout.

        A ZMQ PUB drops what it publishes until the subscriber's subscription
        has reached it (the slow joiner), so an engine whose first requests
        arrive right after we bind would lose its first KV events, and every
        block chained on them would have an unknown parent. The subscription
        follows the handshake at once; ``settle_s`` covers its trip.
        """
        deadline = time.monotonic() + timeout_s
        while self.peers < 1:
            if time.monotonic() >= deadline or not self.running:
                return False
            await asyncio.sleep(0.01)
        await asyncio.sleep(settle_s)
        return True

    async def stop(self) -> None:
        """Stop reading and close the socket; safe to call twice."""
        for name in ("_task", "_monitor_task"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if me is not None and me.cancelling():  # stop() itself was cancelled
                        raise
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.disable_monitor()
            sock.close(linger=0)

    async def __aenter__(self) -> KvEventListener:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def wait_for_batches(self, n: int, timeout_s: float = 5.0) -> bool:
        """Wait until ``n`` batches arrived in all; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.stats.batches < n:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def _read(self) -> None:
        sock = self._socket
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError as exc:  # socket closed under us
                self.stats.error(f"{self.endpoint}: receive failed, listener stopped: {exc}")
                return
            try:
                self.feed(frames)
            except Exception as exc:  # input feed() did not foresee: count it, keep reading
                self.stats.malformed += 1
                self.stats.error(f"{self.endpoint}: unexpected {type(exc).__name__} on a batch: {exc}")

    def feed(self, frames: list[bytes]) -> None:
        """Process one received message ``[topic, seq, payload]`` (public so tests can skip ZMQ)."""
        stats = self.stats
        try:
            if len(frames) != 3:
                raise MalformedEvent(f"expected [topic, seq, payload], got {len(frames)} frames")
            _, seq_bytes, payload = frames
            if len(seq_bytes) != 8:
                raise MalformedEvent(f"sequence number is {len(seq_bytes)} bytes, not 8")
            ts, events = decode_batch(payload)
        except MalformedEvent as exc:
            stats.malformed += 1
            stats.error(f"{self.endpoint}: {exc}")
            return
        seq = int.from_bytes(seq_bytes, "big")
        if stats.first_event_wall_ms is None:
            stats.first_event_wall_ms = time.time() * 1000.0
            stats.first_seq = seq
        elif seq > stats.last_seq + 1:
            stats.seq_gaps += seq - stats.last_seq - 1
        elif seq <= stats.last_seq:
            stats.seq_resets += 1
        stats.batches += 1
        stats.last_seq = seq
        stats.last_ts = ts
        for event in events:
            for update in self.translator.translate(event):
                try:
                    self.on_event(self.worker, update)
                except Exception as exc:  # a broken consumer must not kill the reader
                    stats.callback_errors += 1
                    stats.error(f"{self.endpoint}: on_event({self.worker}, {update.kind.value!r}, "
                                f"{len(update.block_hashes)} blocks) raised {type(exc).__name__}: {exc}")
