"""Dead-letter previews and requeues (streambridge/ops.py) on fakeredis with Lua: odd
letters are shown in part and never lost."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from streambridge import ops
from streambridge.settings import CommonSettings

SETTINGS = CommonSettings(stream="events")


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def client(server):
    # As the web app reads: text, and bytes that are not UTF-8 as surrogate escapes.
    return fakeredis.FakeRedis(
        server=server, decode_responses=True, encoding_errors="surrogateescape"
    )


def letter(client, **fields) -> str:
    return client.xadd("events:dead", {**fields, "reason": "r", "original_id": "1-1"})


def test_a_requeue_that_cannot_append_loses_nothing(client):
    dead_id = letter(client, channel="m", body='"x"')
    client.set("events", "not a stream")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        ops.requeue(client, SETTINGS, [dead_id])
    assert client.xlen("events:dead") == 1


def test_a_letter_with_too_many_fields_is_left_where_it_is(client):
    many = {f"f{n}": "v" for n in range(ops.MAX_REQUEUE_FIELDS + 1)}
    dead_id = letter(client, **many)
    fine = letter(client, channel="m", body='"x"')
    moved = ops.requeue(client, SETTINGS, None)
    assert [d for d, _ in moved] == [fine]
    assert [i for i, _ in client.xrange("events:dead")] == [dead_id]


def test_previews_cut_values_in_redis_and_keep_bytes_that_are_not_utf8(server, client):
    odd = {b"channel": b"m", b"body": b"\xff" * 400, b"reason": "é" * 200}
    fakeredis.FakeRedis(server=server).xadd("events:dead", odd)
    for n in range(12):  # more than one script's batch
        letter(client, channel="m", body=str(n))
    letters = ops.dead_letters(client, SETTINGS, 10, preview=20)
    assert len(letters) == 10
    first = letters[0]
    assert first["fields"]["body"] == "\udcff" * 20  # cut, and still the bytes it was
    assert first["reason"] == "é" * 10  # 20 bytes: ten whole characters
    assert first["truncated"] == {"body": 400, "reason": 400}
    assert [d["fields"]["body"] for d in letters[1:]] == [str(n) for n in range(9)]
    assert all(d["truncated"] == {} for d in letters[1:])
