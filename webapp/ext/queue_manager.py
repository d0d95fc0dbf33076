"""The web side of the Socket.IO message queue.

python-socketio's RedisManager, plus what durable delivery needs:

* ``subscribed``: the server waits for its subscription before it answers anything;
* stream events (emits whose second argument is the bridge's meta) are delivered
  per client, so a client being caught up has its live events held back until
  its replay is done, and the last id each client got is remembered;
* a dropped pub/sub connection (pub/sub keeps nothing meanwhile) is noticed, also
  when redis-py re-subscribes silently, and ``on_gap`` is called once the
  subscription is back so clients can be caught up from the stream.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import socketio
import structlog
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from streambridge.ids import ZERO, StreamId
from streambridge.queue import META_MARKER, publish_command, subscriber
from streambridge.redis_conn import ERRORS, connect

log = structlog.get_logger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0
YIELD_EVERY = 32  # queue messages handled between two yields to the writers

Held = tuple[int, StreamId, str, list[Any]]  # (shard, id, event, [body, meta])


def stream_meta(message: dict) -> dict | None:
    """The bridge's meta dict if ``message`` is a stream event, else None."""
    data = message.get("data")
    if (
        isinstance(data, list)
        and len(data) == 2
        and isinstance(data[1], dict)
        and data[1].get(META_MARKER)
        and isinstance(data[1].get("id"), str)
        and not message.get("binary")
    ):
        return data[1]
    return None


class _ReconnectHook:
    """Runs when redis-py reconnects a pub/sub connection and re-subscribes by itself:
    whatever was published meanwhile never reached this server."""

    def __init__(self, listener: Listener, resubscribe: Callable[[Any], None]):
        self.listener = listener
        self.resubscribe = resubscribe

    def on_connect(self, connection: Any) -> None:
        self.resubscribe(connection)
        log.warning("queue.resubscribed_after_drop", channel=self.listener.channel)
        self.listener.manager.mark_gap()


class Listener:
    """One subscribed queue channel, kept subscribed across drops, failovers and slot
    moves. Every drop is reported to the manager as a gap (pub/sub keeps nothing)."""

    def __init__(self, manager: StreamQueueManager, channel: str) -> None:
        self.manager = manager
        self.channel = channel
        self.subscribed = threading.Event()  # green under eventlet (patched first)
        self.pubsub: Any = None
        self._client: Any = None
        self._ever_subscribed = False

    def _connect(self) -> None:
        """A fresh pub/sub connection (on a cluster: to the node that has the channel
        now, after a failover or a slot move)."""
        self._client = self.manager._client(listening=True)
        self.pubsub = subscriber(self._client, self.channel)
        # redis-py keeps connect callbacks as weak methods: keep the hook alive here.
        self._reconnect_hook = _ReconnectHook(self, self.pubsub.on_connect)
        self.pubsub.on_connect = self._reconnect_hook.on_connect

    def messages(self):
        """Data messages of the channel, across reconnects."""
        manager = self.manager
        retry = RETRY_MIN_S
        connected = False
        channel = self.channel.encode()
        while True:
            try:
                if not connected:
                    self.close()
                    self._connect()
                    self._subscribe()
                    connected = True
                    retry = RETRY_MIN_S
                    if self._ever_subscribed:
                        manager.mark_gap()
                    self._ever_subscribed = True
                    self.subscribed.set()
                    log.info(
                        "queue.subscribed", channel=self.channel, sharded=manager.sharded_pubsub
                    )
                    manager._check_gap()  # hold clients before any newer message is handled
                for message in self.pubsub.listen():
                    manager._check_gap()
                    kind = message["type"]
                    if kind in ("message", "smessage"):
                        if message["channel"] == channel:
                            yield message["data"]
                    elif kind in ("unsubscribe", "sunsubscribe"):
                        # The server ended the subscription (its slot moved to
                        # another node): subscribe again where the channel is now.
                        raise redis.ConnectionError("subscription ended by the server")
            except Exception as exc:
                connected = False
                self.subscribed.clear()
                log.warning(
                    "queue.disconnected", channel=self.channel, error=str(exc), retry_in_s=retry
                )
                time.sleep(retry)
                retry = min(RETRY_MAX_S, retry * 2)
            manager._check_gap()

    def _subscribe(self) -> None:
        """Subscribe and wait for the server's confirmation: from then on nothing
        published is missed (an error, e.g. MOVED, raises here)."""
        if self.manager.sharded_pubsub:
            self.pubsub.ssubscribe(self.channel)
        else:
            self.pubsub.subscribe(self.channel)
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.5)
            if message and message["type"] in ("subscribe", "ssubscribe"):
                return
        raise redis.TimeoutError("no confirmation of the subscription")

    def close(self) -> None:
        """Let go of the subscription and its client (on a cluster, a client holds
        connections to every node it discovered)."""
        for resource in (self.pubsub, self._client):
            if resource is not None:
                with contextlib.suppress(Exception):
                    resource.close()


class _AllSubscribed:
    """Set when every listener is subscribed (what the web server waits for)."""

    def __init__(self, listeners: list[Listener]) -> None:
        self.listeners = listeners

    def is_set(self) -> bool:
        return all(listener.subscribed.is_set() for listener in self.listeners)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for listener in self.listeners:
            if not listener.subscribed.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True


class StreamQueueManager(socketio.RedisManager):
    name = "streambridge-redis"

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        cluster: bool = False,
        sharded_pubsub: bool = False,
        shards: int = 1,
        shard_channels: list[str] | None = None,
        max_client_queue: int = 2_000,
        **kwargs: Any,
    ) -> None:
        """``shard_channels``: where the bridges publish each shard's events when they
        are not on ``channel`` (sharded pub/sub: a channel in each shard's slot)."""
        # RedisManager would hand URLs it does not know to Kombu: connections are
        # made here instead, by the one function that knows every URL form.
        super().__init__(url, channel=channel, **kwargs)
        self.cluster = cluster
        self.sharded_pubsub = sharded_pubsub
        self.shards = shards
        self._publish_command = publish_command(sharded_pubsub)
        self.max_client_queue = max_client_queue
        self._since_yield = 0
        self.metrics: Any = None  # WebMetrics, set by the extension
        self._shedding: set[str] = set()
        extra = [c for c in dict.fromkeys(shard_channels or []) if c != channel]
        self.listeners = [Listener(self, c) for c in (channel, *extra)]
        self.subscribed = _AllSubscribed(self.listeners)
        self.on_gap: Callable[[], None] | None = None
        self._lock = threading.RLock()
        self._held: dict[str, list[Held]] = {}
        # Per client, per shard: the newest id it was sent.
        self.positions: dict[str, dict[int, StreamId]] = {}
        # Per client, per shard: up to here it already has everything (it was
        # replayed): drop repeats.
        self._covered: dict[str, dict[int, StreamId]] = {}
        self._gap = False

    # -- subscription ------------------------------------------------------------
    def wait_subscribed(self, timeout: float) -> bool:
        return self.subscribed.wait(timeout)

    def _client(self, *, listening: bool = False) -> Any:
        # Listening: no socket timeout, a quiet channel is not a dead connection; TCP
        # keepalive instead, so a host that vanished without closing the connection
        # (power loss, partition) is noticed in about 25 s.
        options: dict[str, Any] = {}
        if listening:
            options = {"socket_timeout": None, "health_check_interval": 0, "keepalive": True}
        return connect(self.redis_url, cluster=self.cluster, decode_responses=False, **options)

    def _redis_connect(self) -> None:
        # The listeners connect themselves; this is the client for the server's emits.
        if self.redis is None:
            self.redis = self._client()

    def _publish(self, data: Any) -> Any:
        # Emits of the web app itself (not stream events) to the other servers.
        self._redis_connect()
        message = self.json.dumps(data)
        for attempt in (1, 2):  # redis-py reconnects on the next call: once more
            try:
                return self.redis.execute_command(self._publish_command, self.channel, message)
            except ERRORS as exc:
                # As python-socketio does: logged and dropped, the caller goes on.
                log.warning("queue.publish_failed", error=str(exc), attempt=attempt)
        return None

    def mark_gap(self) -> None:
        self._gap = True

    def _listen(self):
        # Decode here and pass on only objects: python-socketio's listener fails on a
        # JSON number or string outside its per-message guard and drops the connection,
        # so anyone who can PUBLISH could make every server reconnect.
        yield from self._decoded(self.listeners[0])

    def _decoded(self, listener: Listener):
        for message in listener.messages():
            try:
                data = self.json.loads(message)
            except Exception as exc:  # not JSON (pickle, garbage): ignored, never unpickled
                log.warning("queue.bad_message", error=str(exc)[:200])
                continue
            if isinstance(data, dict):
                yield data

    def _check_gap(self) -> None:
        if self._gap:
            self._gap = False
            if self.on_gap is not None:
                self.on_gap()  # synchronous and quick: it only holds clients

    def _thread(self) -> None:
        # After a reconnect the listen loop only wakes on the next message; check
        # for a gap periodically too, so quiet channels are caught up as well.
        self.server.start_background_task(self._gap_watch)
        for listener in self.listeners[1:]:
            self.server.start_background_task(self._shard_thread, listener)
        super()._thread()

    def _shard_thread(self, listener: Listener) -> None:
        """A shard channel carries only the bridge's stream events."""
        for data in self._decoded(listener):
            if data.get("method") == "emit" and data.get("host_id") != self.host_id:
                self._handle_emit(data)

    def _gap_watch(self) -> None:
        while True:
            self.server.sleep(0.2)
            if self.subscribed.is_set():
                self._check_gap()

    # -- delivery -----------------------------------------------------------------
    def _handle_emit(self, message: dict) -> None:
        meta = stream_meta(message)
        if meta is None:
            return super()._handle_emit(message)
        try:
            self.deliver_stream_event(
                message["event"],
                message["data"],
                message.get("namespace") or "/",
                message.get("room"),
            )
        except Exception as exc:  # one message must never stop the listener
            _undeliverable(meta.get("id"), exc)
        # Let the writers run now and then: a burst read from one pub/sub buffer would
        # otherwise fill every client's queue at once, and the queue length would
        # measure the burst instead of how slow a client is. Not after every message:
        # each yield wakes every writer, which costs more than the delivery itself.
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            self.server.sleep(0)

    def deliver_stream_event(
        self, event: str, data: list[Any], namespace: str, room: str | None
    ) -> None:
        try:
            stream_id = StreamId.parse(data[1]["id"])
        except ValueError:
            log.warning("queue.bad_stream_id", stream_id=str(data[1].get("id"))[:64])
            return
        shard = data[1].get("shard", 0)
        if type(shard) is not int or not 0 <= shard < self.shards:
            log.warning("queue.bad_shard", shard=str(shard)[:16], shards=self.shards)
            return
        packets = None
        with self._lock:
            sockets = self.server.eio.sockets
            for sid, eio_sid in self.get_participants(namespace, room):
                if sid in self._shedding:
                    continue
                held = self._held.get(sid)
                if held is not None:
                    if len(held) >= self.max_client_queue:
                        # Caught up too slowly while live events keep coming: shed it;
                        # it reconnects from its last id.
                        sock = sockets.get(eio_sid)
                        if sock is not None:
                            self._held.pop(sid, None)
                            self._shed(sid, sock)
                        continue
                    held.append((shard, stream_id, event, data))
                    continue
                covered = self._covered.get(sid)
                if covered is not None and stream_id <= covered.get(shard, ZERO):
                    continue
                sock = sockets.get(eio_sid)
                if sock is not None and sock.queue.qsize() > self.max_client_queue:
                    self._shed(sid, sock)
                    continue
                if packets is None:
                    packets = self._encode(event, data, namespace)
                for p in packets:
                    self.server._send_eio_packet(eio_sid, p)
                positions = self.positions.setdefault(sid, {})
                if positions.get(shard, ZERO) < stream_id:
                    positions[shard] = stream_id

    def queue_length(self, sid: str, namespace: str) -> int:
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        sock = self.server.eio.sockets.get(eio_sid) if eio_sid else None
        return sock.queue.qsize() if sock is not None else 0

    def _shed(self, sid: str, sock: Any) -> None:
        """A client that cannot keep up: drop what is queued for it and close its
        connection. Its memory stays bounded, the others are not held up, and it comes
        back with its last id and is caught up from the stream."""
        self._shedding.add(sid)
        empty = self.server.eio.get_queue_empty_exception()
        dropped = 0
        while True:
            try:
                sock.queue.get(block=False)
                sock.queue.task_done()
                dropped += 1
            except empty:
                break
        log.warning("socket.shed", sid=sid, dropped_packets=dropped)
        if self.metrics is not None:
            self.metrics.shed.inc()
        self.server.start_background_task(sock.close, wait=False, abort=True)
        # The writer may be stuck sending to a client that does not read: cut the TCP
        # connection under it, so it ends now rather than at a socket time-out.
        environ = self.server.environ.get(sock.sid) or {}
        raw = getattr(environ.get("eventlet.input"), "get_socket", lambda: None)()
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)

    def send_to(self, sid: str, namespace: str, event: str, data: list[Any]) -> None:
        """Send one event to one client now (replays and notices), bypassing any hold."""
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        if eio_sid is None:
            return
        for p in self._encode(event, data, namespace):
            self.server._send_eio_packet(eio_sid, p)

    def _encode(self, event: str, data: list[Any], namespace: str) -> list:
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *data])
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]

    # -- holding live events while a client is caught up -------------------------
    def hold(self, sid: str) -> None:
        with self._lock:
            self._held.setdefault(sid, [])

    def is_held(self, sid: str) -> bool:
        """Connecting or being caught up: live events wait."""
        return sid in self._held

    def release(
        self,
        sid: str,
        namespace: str,
        *,
        covered: dict[int, StreamId],
        start: dict[int, StreamId],
    ) -> int:
        """Send what was held, in stream order, skipping what the replay covered.

        Per shard: ``covered``, up to where the replay sent everything; ``start``,
        where the client's live history begins (the shard's newest id when it was
        caught up); its position never goes below that.
        """
        with self._lock:
            held = self._held.pop(sid, None) or []
            held.sort(key=lambda h: (h[1], h[0]))
            positions = self.positions.setdefault(sid, {})
            for shard, stream_id in start.items():
                positions[shard] = max(positions.get(shard, ZERO), stream_id)
            mine = self._covered.setdefault(sid, {})
            for shard, stream_id in covered.items():
                mine[shard] = max(mine.get(shard, ZERO), stream_id)
                positions[shard] = max(positions.get(shard, ZERO), stream_id)
            sent = 0
            for shard, stream_id, event, data in held:
                if stream_id <= covered.get(shard, ZERO):
                    continue
                try:
                    self.send_to(sid, namespace, event, data)
                except Exception as exc:  # one held event must never block the release
                    _undeliverable(stream_id, exc)
                    continue
                sent += 1
                if positions.get(shard, ZERO) < stream_id:
                    positions[shard] = stream_id
            return sent

    def forget(self, sid: str) -> None:
        with self._lock:
            self._held.pop(sid, None)
            self.positions.pop(sid, None)
            self._covered.pop(sid, None)
            self._shedding.discard(sid)


def _undeliverable(stream_id: object, exc: Exception) -> None:
    log.warning(
        "queue.undeliverable",
        stream_id=str(stream_id)[:64],
        error=f"{type(exc).__name__}: {exc}"[:200],
    )
