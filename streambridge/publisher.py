"""``publish()`` and ``publish_many()``: validated XADD with approximate trimming."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from streambridge import keys
from streambridge.contract import ContractError, Event, check_known_fields
from streambridge.history import Script
from streambridge.settings import ProducerSettings

PIPELINE_CHUNK = 1_000
"""Entries sent per round trip by ``publish_many``."""

ADD_ONCE = """
local first = redis.call('GET', KEYS[2])
if first then return first end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return id
"""
"""KEYS: the stream, the event's idempotency key (``keys.idempotency``). ARGV: maxlen,
the window in ms, then the entry's fields. Appends the event unless its key is taken:
returns the new entry's id, or the first one's (a repeat appends nothing). The bridge
reads the same key: the entry it names is published, any other with the key is not."""


class Publisher:
    """Appends events to the stream (to its shard by room, when sharded). Reuse one
    instance; it holds a connection pool."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        settings: ProducerSettings | None = None,
    ) -> None:
        self.settings = settings or ProducerSettings()
        self.redis = client if client is not None else self.settings.connect()
        self.stream_keys = self.settings.stream_keys
        self._add_once = Script(self.redis, ADD_ONCE)

    def event(
        self,
        channel: str,
        body: Any,
        room: str | None = None,
        namespace: str = "/",
        *,
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        return Event.build(
            channel,
            body,
            room,
            namespace,
            sender=sender,
            idempotency_key=idempotency_key,
            max_body_bytes=self.settings.max_body_bytes,
        )

    def add(self, event: Event, pipe: Any = None) -> Any:
        target = pipe if pipe is not None else self.redis
        stream = self.stream_keys[event.shard(len(self.stream_keys))]
        if event.idempotency_key is not None:
            # Once per key and room: a retry answers the first publish's id.
            key = keys.idempotency(
                stream, event.namespace, event.room, event.sender, event.idempotency_key
            )
            fields = [part for pair in event.to_fields().items() for part in pair]
            args = [self.settings.maxlen, self.settings.idempotency_window_s * 1000, *fields]
            return self._add_once([stream, key], args)  # not pipelined: see _flush
        return target.xadd(stream, event.to_fields(), maxlen=self.settings.maxlen, approximate=True)

    def publish(
        self,
        channel: str,
        body: Any,
        room: str | None = None,
        namespace: str = "/",
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate and append one event; returns its stream id. With an
        ``idempotency_key``, a repeat within the window (a retry after a timeout)
        appends nothing and returns the first event's id."""
        event = self.event(channel, body, room, namespace, idempotency_key=idempotency_key)
        return _text(self.add(event))

    def publish_events(self, events: Iterable[Event]) -> list[str]:
        """Append already-validated events, pipelined; returns their ids in order."""
        ids: list[str] = []
        chunk: list[Event] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= PIPELINE_CHUNK:
                ids.extend(self._flush(chunk))
                chunk = []
        if chunk:
            ids.extend(self._flush(chunk))
        return ids

    def publish_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every item first (``channel``, ``body``, ``room``?, ``namespace``?),
        then append them all. Nothing is appended if any item is invalid."""
        events = []
        for index, item in enumerate(items):
            try:
                events.append(self.event_from_item(item))
            except ContractError as exc:
                raise ContractError(f"item {index}: {exc.reason}") from None
        return self.publish_events(events)

    def event_from_item(self, item: Mapping[str, Any]) -> Event:
        """An event from a mapping: ``channel``, ``body`` (any JSON value), ``room``?,
        ``namespace``?, ``from``?."""
        if not isinstance(item, Mapping):
            raise ContractError("must be an object with channel and body")
        check_known_fields(item)
        if "channel" not in item or "body" not in item:
            raise ContractError("channel and body are required")
        return self.event(
            item["channel"],
            item["body"],
            item.get("room"),
            item.get("namespace") or "/",
            sender=item.get("from"),
            idempotency_key=item.get("idempotency_key"),
        )

    def _flush(self, events: list[Event]) -> list[str]:
        if any(e.idempotency_key is not None for e in events):
            # One by one, in order: the script's answer decides (and redis-py loads it
            # again into a Redis that lost it, which a pipeline would not).
            return [_text(self.add(event)) for event in events]
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            self.add(event, pipe)
        return [_text(i) for i in pipe.execute()]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


_default: Publisher | None = None


def _publisher() -> Publisher:
    global _default
    if _default is None:
        _default = Publisher()
    return _default


def configure(
    redis_url: str | None = None,
    *,
    client: redis.Redis | None = None,
    **settings: Any,
) -> Publisher:
    """One-time set-up for ``publish()`` / ``emit_event()`` in this process.

    Without it they use the environment (``REDIS_URL``, ``STREAMBRIDGE_*``).
    ``settings`` are ProducerSettings fields, e.g. ``stream="events"``, ``maxlen=50_000``.
    """
    global _default
    values = {k: v for k, v in settings.items() if v is not None}
    if redis_url is not None:
        values["redis_url"] = redis_url
    _default = Publisher(client, ProducerSettings(**values))
    return _default


def emit_event(channel: str, body: Any, room: str | None = None, namespace: str = "/") -> str:
    """The original pattern's call, now durable: appends to the stream instead of
    emitting straight to the queue. Returns the stream id."""
    return publish(channel, body, room, namespace)


def publish(
    channel: str,
    body: Any,
    room: str | None = None,
    namespace: str = "/",
    *,
    idempotency_key: str | None = None,
    publisher: Publisher | None = None,
) -> str:
    """Append one event (body: any JSON-serializable value); returns the stream id.
    ``idempotency_key``: retry with the same key and the event is delivered once (a
    repeat returns the first id)."""
    return (publisher or _publisher()).publish(
        channel, body, room, namespace, idempotency_key=idempotency_key
    )


def publish_many(
    items: Iterable[Mapping[str, Any]], *, publisher: Publisher | None = None
) -> list[str]:
    """Append many events (mappings with ``channel``, ``body``, optional ``room``)."""
    return (publisher or _publisher()).publish_many(items)
