"""The bridge fed arbitrary entries (any fields, any bytes) against a real redis-server:
each is published or dead-lettered, exactly once, and acked."""

from __future__ import annotations

import json
import time

import pytest
import redis
from hypothesis import event as label
from hypothesis import example, given
from hypothesis import strategies as st
from streambridge.bridge.daemon import Bridge, _entries

from streambridge import defaults
from streambridge.queue import unbatched
from streambridge.settings import BridgeSettings
from tests.unit.test_fuzz import FUZZ, _key, any_fields, body_limits

pytestmark = pytest.mark.integration


@FUZZ
@given(
    entries=st.lists(any_fields().filter(bool), min_size=1, max_size=6),
    limit=body_limits,
    as_text=st.lists(st.booleans(), min_size=6, max_size=6),
)
# Deep JSON under the size limit reaches the parser; NaN; a body that is not UTF-8.
@example(
    entries=[
        {"channel": "m", "body": "[" * 3_000 + "]" * 3_000},
        {"channel": "m", "body": "NaN"},
        {b"channel": b"m", b"body": b'"\xff"'},
        {"channel": "m", "body": "1", "room": "user:bob"},
    ],
    limit=defaults.MAX_BODY_BYTES,
    as_text=[True] * 6,
)
def test_bridge_process_publishes_or_dead_letters_and_acks_everything(
    redis_server, entries, limit, as_text
):
    raw = redis.Redis.from_url(redis_server.url)  # bytes: any producer's entries
    raw.flushall()
    text = redis_server.client()  # decoded, as the bridge's own client
    settings_ = BridgeSettings(redis_url="redis://unused", consumer="c1", max_body_bytes=limit)
    bridge = Bridge(settings_, client=text)
    bridge.ensure_group()
    pubsub = text.pubsub()
    pubsub.subscribe(settings_.queue_channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    try:
        for fields in entries:
            raw.xadd("events", {_key(k): _key(v) for k, v in fields.items()})
        # Read as the bridge's consumer (so the entries are pending on it), in bytes.
        read = raw.xreadgroup("bridge", "c1", {"events": ">"})
        batch = []
        for (stream_id, fields), text_wanted in zip(_entries(read), as_text, strict=False):
            try:  # what the bridge's decoding client gives, when it can decode
                decoded = {k.decode(): v.decode() for k, v in fields.items()}
            except UnicodeDecodeError:
                decoded = None
            use_text = decoded is not None and text_wanted
            batch.append((stream_id.decode(), decoded if use_text else fields))
        ids = [i for i, _ in batch]

        bridge.process(batch)

        published: list[str] = []

        def receive(timeout: float) -> bool:
            m = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if m is not None:
                published.extend(e["data"][1]["entry"] for e in unbatched(json.loads(m["data"])))
            return m is not None

        # What the bridge says it published, then anything more already there (Redis
        # writes a script's messages in the same pass as its reply): a repeat shows.
        deadline = time.monotonic() + 5
        while len(published) < bridge.stats["emitted"] and time.monotonic() < deadline:
            receive(0.5)
        while receive(0.01):
            pass
        dead_letters = [f for _, f in text.xrange("events:dead")]
        dead = [f["original_id"] for f in dead_letters]
        label(f"published some: {bool(published)}, dead-lettered some: {bool(dead)}")
        assert sorted(published + dead) == sorted(ids)  # each exactly once, one way or other
        assert all(f["reason"] for f in dead_letters)
        assert text.xpending("events", "bridge")["pending"] == 0
        assert bridge.stats["acked"] == len(ids)
    finally:
        pubsub.close()
        raw.close()
        text.close()
