"""Keeping a web server subscribed to the queue's pub/sub channels.

A ``QueueListener`` owns one channel's connection life cycle: connect, subscribe and
wait for the confirmation, listen, and after a drop, a failover or a slot move,
reconnect with back-off. Pub/sub keeps nothing while a server is away, so every drop
(also one redis-py repairs by re-subscribing silently) is marked on the server's
``Gaps``, which reports it once the subscription is back, before anything newer is
handled, so clients can be caught up from the stream.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.backoff import EqualJitterBackoff

from streambridge.queue import subscriber

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0
RETRY = EqualJitterBackoff(cap=RETRY_MAX_S, base=RETRY_MIN_S)


class Gaps:
    """Drops of a server's subscriptions. A drop is marked when it is noticed and
    reported to the handler once, at the next ``report()`` (the listeners call it
    after re-subscribing and before each message they handle)."""

    def __init__(self) -> None:
        self._pending = False
        self._handler: Callable[[], None] | None = None

    def set_handler(self, handler: Callable[[], None]) -> None:
        """``handler`` runs in the listener, before anything newer is delivered: it must
        be synchronous and quick (catch-up only holds clients there)."""
        self._handler = handler

    def mark(self) -> None:
        self._pending = True

    def report(self) -> None:
        if self._pending:
            self._pending = False
            if self._handler is not None:
                self._handler()


class _ReconnectHook:
    """Runs when redis-py reconnects a pub/sub connection and re-subscribes by itself:
    whatever was published meanwhile never reached this server."""

    def __init__(self, channel: str, gaps: Gaps, resubscribe: Callable[[Any], None]) -> None:
        self.channel = channel
        self.gaps = gaps
        self.resubscribe = resubscribe

    def on_connect(self, connection: Any) -> None:
        self.resubscribe(connection)
        log.warning("queue.resubscribed_after_drop", extra={"channel": self.channel})
        self.gaps.mark()


class QueueListener:
    """One subscribed queue channel, kept subscribed across drops, failovers and slot
    moves. Every drop is marked on ``gaps`` (pub/sub keeps nothing)."""

    def __init__(
        self, channel: str, *, connect: Callable[[], Any], sharded: bool, gaps: Gaps
    ) -> None:
        """``connect``: a new Redis client for listening (on a cluster, one that finds
        the node that has the channel now); ``sharded``: SSUBSCRIBE instead of
        SUBSCRIBE."""
        self.channel = channel
        self.sharded = sharded
        self.gaps = gaps
        self.subscribed = threading.Event()  # green under gevent and eventlet (patched first)
        self.pubsub: Any = None
        self._new_client = connect
        self._client: Any = None
        self._ever_subscribed = False

    def _connect(self) -> None:
        """A fresh pub/sub connection (on a cluster: to the node that has the channel
        now, after a failover or a slot move)."""
        self._client = self._new_client()
        self.pubsub = subscriber(self._client, self.channel)
        # redis-py keeps connect callbacks as weak methods: keep the hook alive here.
        self._reconnect_hook = _ReconnectHook(self.channel, self.gaps, self.pubsub.on_connect)
        self.pubsub.on_connect = self._reconnect_hook.on_connect

    def messages(self) -> Iterator[bytes]:
        """Data messages of the channel, across reconnects."""
        gaps = self.gaps
        failures = 0
        connected = False
        channel = self.channel.encode()
        while True:
            try:
                if not connected:
                    self.close()
                    self._connect()
                    self._subscribe()
                    connected = True
                    failures = 0
                    if self._ever_subscribed:
                        gaps.mark()
                    self._ever_subscribed = True
                    self.subscribed.set()
                    log.info(
                        "queue.subscribed", extra={"channel": self.channel, "sharded": self.sharded}
                    )
                    gaps.report()  # hold clients before any newer message is handled
                for message in self.pubsub.listen():
                    gaps.report()
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
                delay = RETRY.compute(failures)
                failures += 1
                log.warning(
                    "queue.disconnected",
                    extra={
                        "channel": self.channel,
                        "error": str(exc),
                        "retry_in_s": round(delay, 3),
                    },
                )
                time.sleep(delay)
            gaps.report()

    def _subscribe(self) -> None:
        """Subscribe and wait for the server's confirmation: from then on nothing
        published is missed (an error, e.g. MOVED, raises here)."""
        if self.sharded:
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


class AllSubscribed:
    """Set when every listener is subscribed (what the web server waits for)."""

    def __init__(self, listeners: list[QueueListener]) -> None:
        self.listeners = listeners

    def is_set(self) -> bool:
        return all(listener.subscribed.is_set() for listener in self.listeners)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for listener in self.listeners:
            if not listener.subscribed.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True
