"""The web side of the Socket.IO message queue: the client manager python-socketio is
given.

python-socketio's RedisManager, plus what durable delivery needs:

* its channels are kept subscribed by ``QueueListener``s (``queue_listener``), and
  ``subscribed`` is what the server waits for before it answers anything;
* stream events (emits whose second argument is the bridge's meta) are delivered per
  client through the ``DeliveryLedger`` (``delivery_ledger``), which holds a client's
  live events back while it is caught up and remembers the last id each client got;
  this manager is the ledger's ``Courier``: it encodes, sends and sheds;
* a dropped subscription is reported through ``gaps`` once it is back, so clients can
  be caught up from the stream.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from streambridge.webapp.ext.delivery_ledger import DeliveryLedger, undeliverable
from streambridge.webapp.ext.presence_keeper import PRESENCE_METHOD
from streambridge.webapp.ext.queue_listener import AllSubscribed, Gaps, QueueListener

from streambridge.ids import ZERO, StreamId
from streambridge.queue import META_MARKER, publish_command, unbatched
from streambridge.redis_conn import ERRORS, connect

log = logging.getLogger(__name__)

YIELD_EVERY = 32  # queue messages handled between two yields to the writers


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
        metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        """``shard_channels``: where the bridges publish each shard's events when they
        are not on ``channel`` (sharded pub/sub: a channel in each shard's slot);
        ``metrics``: the ``WebMetrics`` that count shed clients."""
        # RedisManager would hand URLs it does not know to Kombu: connections are
        # made here instead, by the one function that knows every URL form.
        super().__init__(url, channel=channel, **kwargs)
        self.cluster = cluster
        self.sharded_pubsub = sharded_pubsub
        self.shards = shards
        self.metrics = metrics
        self._publish_command = publish_command(sharded_pubsub)
        self._since_yield = 0
        self.ledger = DeliveryLedger(self, max_client_queue)
        # Per shard, the newest stream event the listener has handled (what a
        # subscription's replay may stop at: see CatchUp.subscribe).
        self.newest_handled: dict[int, StreamId] = {}
        self.gaps = Gaps()
        # Presence changes announced by the web servers (presence_keeper).
        self.on_presence: Callable[[dict], None] | None = None
        extra = [c for c in dict.fromkeys(shard_channels or []) if c != channel]
        listening = functools.partial(self._client, listening=True)
        self.listeners = [
            QueueListener(c, connect=listening, sharded=sharded_pubsub, gaps=self.gaps)
            for c in (channel, *extra)
        ]
        self.subscribed = AllSubscribed(self.listeners)

    # -- for catch-up: the server's green threads ---------------------------------------
    def sleep(self, seconds: float) -> None:
        self.server.sleep(seconds)

    def start_background_task(self, target: Callable[..., Any], *args: Any) -> Any:
        return self.server.start_background_task(target, *args)

    # -- subscription (python-socketio's hooks) -----------------------------------------
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
                log.warning("queue.publish_failed", extra={"error": str(exc), "attempt": attempt})
        return None

    def _listen(self) -> Iterator[dict]:
        # Decode here and pass on only objects: python-socketio's listener fails on a
        # JSON number or string outside its per-message guard and drops the connection,
        # so anyone who can PUBLISH could make every server reconnect.
        yield from self._decoded(self.listeners[0])

    def _decoded(self, listener: QueueListener) -> Iterator[dict]:
        for message in listener.messages():
            try:
                data = self.json.loads(message)
            except Exception as exc:  # not JSON (pickle, garbage): ignored, never unpickled
                log.warning("queue.bad_message", extra={"error": str(exc)[:200]})
                continue
            if isinstance(data, dict):
                if data.get("method") == PRESENCE_METHOD:
                    if self.on_presence is not None:
                        try:
                            self.on_presence(data)
                        except Exception as exc:  # one message must never stop the listener
                            log.exception("queue.presence_failed", extra={"error": str(exc)})
                    continue
                # The bridge sends several events to a message: each is delivered on its
                # own, in order (a malformed item is skipped, the others still go).
                yield from unbatched(data)

    def _thread(self) -> None:
        # After a reconnect the listen loop only wakes on the next message; check
        # for a gap periodically too, so quiet channels are caught up as well.
        self.server.start_background_task(self._gap_watch)
        for listener in self.listeners[1:]:
            self.server.start_background_task(self._shard_thread, listener)
        super()._thread()

    def _shard_thread(self, listener: QueueListener) -> None:
        """A shard channel carries only the bridge's stream events."""
        for data in self._decoded(listener):
            if data.get("method") == "emit" and data.get("host_id") != self.host_id:
                self._handle_emit(data)

    def _gap_watch(self) -> None:
        while True:
            self.server.sleep(0.2)
            if self.subscribed.is_set():
                self.gaps.report()

    # -- delivery -----------------------------------------------------------------------
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
            undeliverable(meta.get("id"), exc)
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
            log.warning("queue.bad_stream_id", extra={"stream_id": str(data[1].get("id"))[:64]})
            return
        shard = data[1].get("shard", 0)
        if type(shard) is not int or not 0 <= shard < self.shards:
            log.warning("queue.bad_shard", extra={"shard": str(shard)[:16], "shards": self.shards})
            return
        if self.newest_handled.get(shard, ZERO) < stream_id:
            self.newest_handled[shard] = stream_id
        recipients = self.get_participants(namespace, room)
        sent = self.ledger.deliver(recipients, namespace, shard, stream_id, event, data, room)
        if sent and self.metrics is not None:
            self.metrics.delivered(sent, stream_id)

    def queue_length(self, sid: str, namespace: str) -> int:
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        return (self.backlog(eio_sid) or 0) if eio_sid else 0

    # -- the ledger's Courier -----------------------------------------------------------
    def backlog(self, eio_sid: str) -> int | None:
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is None:
            return None
        # Under gevent, messages kept for an idle writer count too (gevent_guard).
        frames = getattr(sock, "streambridge_frames", None)
        return sock.queue.qsize() + (frames.kept() if frames is not None else 0)

    def encode(self, event: str, data: list[Any], namespace: str) -> list:
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *data])
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]

    def send_packets(self, eio_sid: str, packets: list) -> None:
        for p in packets:
            self.server._send_eio_packet(eio_sid, p)

    def send_to(self, sid: str, namespace: str, event: str, data: list[Any]) -> None:
        """Send one event to one client now (replays and notices), bypassing any hold."""
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        if eio_sid is None:
            return
        self.send_packets(eio_sid, self.encode(event, data, namespace))

    def cut(self, sid: str, eio_sid: str) -> None:
        """Drop what is queued for a client that cannot keep up, and close its
        connection."""
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is None:
            return
        empty = self.server.eio.get_queue_empty_exception()
        dropped = 0
        while True:
            try:
                sock.queue.get(block=False)
                sock.queue.task_done()
                dropped += 1
            except empty:
                break
        log.warning("socket.shed", extra={"sid": sid, "dropped_packets": dropped})
        if self.metrics is not None:
            self.metrics.shed.inc()
        self.server.start_background_task(sock.close, wait=False, abort=True)
        # The writer may be stuck sending to a client that does not read: cut the TCP
        # connection under it, so it ends now rather than at a socket time-out.
        raw = connection_socket(self.server.environ.get(sock.sid) or {})
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)


def connection_socket(environ: dict) -> Any:
    """The TCP socket under a request, from the async server's environ (None if unknown)."""
    raw = environ.get("streambridge.socket")  # gevent_guard puts it there
    if raw is None:
        raw = getattr(environ.get("eventlet.input"), "get_socket", lambda: None)()
    return raw
