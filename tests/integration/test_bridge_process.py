"""The bridge (bridge/daemon.py) in-process against a real redis-server: group set-up,
process, acks, claims, the history script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading

import pytest
import redis
import structlog
from streambridge.bridge.consumer_name import ConsumerName, DuplicateConsumer, owner_token, verdict
from streambridge.bridge.daemon import Bridge, NotReady, PublishFailed, _entries

from streambridge import history, keys
from streambridge.contract import Event
from streambridge.ids import StreamId
from streambridge.queue import MAX_BATCH_BYTES, batch_item, batch_message, unbatched
from streambridge.settings import BridgeSettings

QUEUE = "flask-socketio"

pytestmark = pytest.mark.integration


@pytest.fixture
def rdb(redis_client):
    return redis_client


def make_bridge(rdb, consumer: str = "c1", **overrides) -> Bridge:
    settings = BridgeSettings(redis_url="redis://unused", consumer=consumer, **overrides)
    return Bridge(settings, client=rdb)


@pytest.fixture
def bridge(rdb):
    bridge = make_bridge(rdb)
    bridge.ensure_group()
    return bridge


@pytest.fixture
def queue(rdb):
    """What the bridge publishes on the Socket.IO queue channel, in order."""
    pubsub = rdb.pubsub()
    pubsub.subscribe(QUEUE)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def received(raw: bool = False) -> list[str]:
        """The queue messages (``raw``) or, by default, the emit message of each event
        they carry (a batch's items, as compact JSON)."""
        messages = []
        while (
            # Redis writes a script's messages in the same pass as its reply: they are
            # here by the time the bridge has its answer (on loopback, microseconds).
            message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        ) is not None:
            assert message["channel"] == QUEUE
            messages.append(message["data"])
        if raw:
            return messages
        return [
            json.dumps(item, ensure_ascii=False, separators=(",", ":"))
            for text in messages
            for item in unbatched(json.loads(text))
        ]

    yield received
    pubsub.close()


def read_new(bridge: Bridge, consumer: str | None = None, count: int | None = None):
    s = bridge.settings
    reply = bridge.redis.xreadgroup(s.group, consumer or s.consumer, {s.stream: ">"}, count=count)
    return _entries(reply)


def pending_ids(rdb, consumer: str | None = None) -> list[str]:
    rows = rdb.xpending_range("events", "bridge", min="-", max="+", count=1000)
    return [r["message_id"] for r in rows if consumer is None or r["consumer"] == consumer]


def dead_letters(rdb) -> list[dict[str, str]]:
    return [fields for _, fields in rdb.xrange("events:dead")]


# -- ensure_group ------------------------------------------------------------------------


def test_ensure_group_creates_stream_group_and_epoch(rdb):
    bridge = make_bridge(rdb)
    bridge.ensure_group()
    assert rdb.type("events") == "stream"
    assert [g["name"] for g in rdb.xinfo_groups("events")] == ["bridge"]
    epoch = rdb.get("events:epoch")
    assert epoch
    assert len(epoch) == 32
    assert bridge.epoch == epoch


def test_ensure_group_again_keeps_the_epoch(rdb):
    first = make_bridge(rdb)
    first.ensure_group()
    second = make_bridge(rdb, consumer="c2")
    second.ensure_group()  # BUSYGROUP: tolerated
    first.ensure_group()
    assert first.epoch == second.epoch == rdb.get("events:epoch")


def test_ensure_group_tolerates_a_group_made_by_someone_else(rdb):
    rdb.xgroup_create("events", "bridge", id="0", mkstream=True)
    bridge = make_bridge(rdb)
    bridge.ensure_group()
    assert bridge.epoch
    assert rdb.get("events:epoch") == bridge.epoch


def test_a_recreated_stream_gets_a_new_epoch(rdb):
    bridge = make_bridge(rdb)
    bridge.ensure_group()
    old = bridge.epoch
    rdb.delete("events")
    bridge.ensure_group()
    assert bridge.epoch != old
    assert rdb.get("events:epoch") == bridge.epoch


@pytest.mark.parametrize(
    ("make_key", "kind"),
    [
        (lambda r: r.set("events", "x"), "string"),
        (lambda r: r.rpush("events", "x"), "list"),
        (lambda r: r.hset("events", "a", "b"), "hash"),
    ],
)
def test_ensure_group_refuses_a_key_of_another_type(rdb, make_key, kind):
    make_key(rdb)
    with pytest.raises(NotReady, match=f"holds a {kind}, not a stream"):
        make_bridge(rdb).ensure_group()
    assert rdb.type("events") == kind  # left alone
    assert not rdb.exists("events:epoch")


def test_ensure_group_reraises_other_redis_errors(rdb, monkeypatch):
    bridge = make_bridge(rdb)

    def broken(*args, **kwargs):
        raise redis.ResponseError("ERR something else")

    monkeypatch.setattr(rdb, "xgroup_create", broken)
    with pytest.raises(redis.ResponseError, match="something else"):
        bridge.ensure_group()


# -- process: the happy path -----------------------------------------------------------


def test_valid_entries_are_published_in_order_and_acked(bridge, rdb, queue):
    first = rdb.xadd("events", {"channel": "message", "body": '{"n": 1}'})
    second = rdb.xadd(
        "events", {"channel": "chat", "body": '"hi"', "room": "user:bob", "namespace": "/x"}
    )
    entries = read_new(bridge)
    bridge.process(entries)
    # Each one in its room's history, under the position its message carries.
    broadcast = rdb.xrange(keys.history("events", "/", None))
    bob = rdb.xrange(keys.history("events", "/x", "user:bob"))
    stored = [history.stored_event(p, f) for p, f in broadcast + bob]
    assert stored == [(first, "message", None, {"n": 1}), (second, "chat", None, "hi")]
    assert [list(f) for _, f in broadcast + bob] == [["i"], ["i"]]  # one field each
    (one, _), (two, _) = broadcast[0], bob[0]
    assert StreamId.parse(one) < StreamId.parse(two)
    # One queue message for the batch, its events in order.
    assert queue(raw=True) == [
        batch_message(
            [
                batch_item(Event.parse({"channel": "message", "body": '{"n": 1}'}), one, first),
                batch_item(
                    Event.parse(
                        {"channel": "chat", "body": '"hi"', "room": "user:bob", "namespace": "/x"}
                    ),
                    two,
                    second,
                ),
            ],
            bridge.epoch,
        )
    ]
    assert pending_ids(rdb) == []
    assert dead_letters(rdb) == []
    assert bridge.stats == {
        "read": 2,
        "emitted": 2,
        "acked": 2,
        "dead": 0,
        "claimed": 0,
        "trimmed": 0,
        "repeats": 0,
    }


def test_published_message_carries_id_and_epoch(bridge, rdb, queue):
    stream_id = rdb.xadd("events", {"channel": "m", "body": "[1]"})
    bridge.process(read_new(bridge))
    [message] = queue()
    data = json.loads(message)["data"]
    [(position, _)] = rdb.xrange(keys.history("events", "/", None))
    epoch = rdb.get("events:epoch")
    assert data == [[1], {"id": position, "entry": stream_id, "epoch": epoch, "streambridge": 1}]


def test_a_batch_past_the_size_limit_goes_in_several_messages_in_order(bridge, rdb, queue):
    # 10 events of 60 KB: 600 KB, more than one message may carry (MAX_BATCH_BYTES).
    body = json.dumps("x" * 60_000)
    ids = [rdb.xadd("events", {"channel": "m", "body": body}) for _ in range(10)]
    bridge.process(read_new(bridge))
    raw = queue(raw=True)
    assert len(raw) == math.ceil(10 * 60_000 / MAX_BATCH_BYTES)
    assert all(len(message.encode()) <= MAX_BATCH_BYTES for message in raw)
    entries = [item["data"][1]["entry"] for text in raw for item in unbatched(json.loads(text))]
    assert entries == ids
    assert bridge.stats["acked"] == 10


def test_an_event_bigger_than_the_limit_still_goes_alone(rdb, queue):
    bridge = make_bridge(rdb, max_body_bytes=2 * MAX_BATCH_BYTES)
    bridge.ensure_group()
    small = rdb.xadd("events", {"channel": "m", "body": "1"})
    big = rdb.xadd("events", {"channel": "m", "body": json.dumps("y" * MAX_BATCH_BYTES)})
    bridge.process(read_new(bridge))
    raw = queue(raw=True)
    assert [[i["data"][1]["entry"] for i in unbatched(json.loads(m))] for m in raw] == [
        [small],
        [big],
    ]


def test_byte_fields_are_accepted(bridge, rdb, queue):
    stream_id = rdb.xadd("events", {"channel": "m", "body": '"x"'})
    read_new(bridge)
    bridge.process([(stream_id, {b"channel": b"m", b"body": b'"x"'})])
    assert len(queue()) == 1
    assert bridge.stats["acked"] == 1


def test_an_empty_batch_does_nothing(bridge, queue):
    bridge.process([])
    assert queue() == []
    assert bridge.stats["acked"] == 0


# -- process: dead letters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"channel": "bad channel", "body": "1"}, "channel: must be 1-64 characters"),
        ({"channel": "m", "body": "NaN"}, "body: body is not valid JSON"),
        ({"channel": "m", "body": "1", "colour": "red"}, "unknown field(s): colour"),
        ({"body": "1"}, "channel: is required"),
    ],
)
def test_invalid_entries_go_to_dead_letters_and_are_acked(bridge, rdb, queue, fields, reason):
    stream_id = rdb.xadd("events", fields)
    bridge.process(read_new(bridge))
    assert queue() == []
    [dead] = dead_letters(rdb)
    assert dead["reason"].startswith(reason)
    assert dead["original_id"] == stream_id
    assert dead["consumer"] == "c1"
    for name, value in fields.items():
        assert dead[name] == value
    assert pending_ids(rdb) == []
    assert (bridge.stats["dead"], bridge.stats["acked"], bridge.stats["emitted"]) == (1, 1, 0)


def test_body_over_the_configured_limit_is_dead(rdb, queue):
    bridge = make_bridge(rdb, max_body_bytes=5)
    bridge.ensure_group()
    rdb.xadd("events", {"channel": "m", "body": '"12345"'})
    bridge.process(read_new(bridge))
    assert queue() == []
    [dead] = dead_letters(rdb)
    assert dead["reason"] == "body: body is 7 bytes, more than the limit of 5"


def test_a_mixed_batch_publishes_the_good_and_dead_letters_the_bad(bridge, rdb, queue):
    good1 = rdb.xadd("events", {"channel": "m", "body": "1"})
    bad = rdb.xadd("events", {"channel": "m", "body": "{oops"})
    good2 = rdb.xadd("events", {"channel": "m", "body": "2"})
    bridge.process(read_new(bridge))
    ids = [json.loads(m)["data"][1]["entry"] for m in queue()]
    assert ids == [good1, good2]
    assert [d["original_id"] for d in dead_letters(rdb)] == [bad]
    assert pending_ids(rdb) == []


def test_non_utf8_entry_is_dead_lettered_readably(rdb, queue):
    bridge = make_bridge(rdb)
    bridge.ensure_group()
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1"})
    bridge.process([(stream_id, {b"channel": b"m", b"body": b"\xff"})])
    [dead] = dead_letters(rdb)
    assert dead["reason"] == "field b'body' is not UTF-8"
    assert dead["body"] == "\\xff"
    assert queue() == []


def test_dead_letters_are_trimmed_approximately(rdb, monkeypatch):
    bridge = make_bridge(rdb, dead_maxlen=7)
    bridge.ensure_group()
    rdb.xadd("events", {"channel": "bad channel", "body": "1"})
    sent = []
    real_pipeline = rdb.pipeline

    def pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a, **kw):
            sent.extend(cmd for cmd, _ in pipe.command_stack)
            return real_execute(*a, **kw)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(rdb, "pipeline", pipeline)
    bridge.process(read_new(bridge))
    [xadd] = [cmd for cmd in sent if cmd[0] == "XADD"]
    assert [a.decode() if isinstance(a, bytes) else a for a in xadd[:5]] == [
        "XADD",
        "events:dead",
        "MAXLEN",
        "~",
        "7",
    ]


def test_a_deeply_nested_body_is_dead_lettered_and_the_batch_goes_on(bridge, rdb, queue):
    good1 = rdb.xadd("events", {"channel": "m", "body": "1"})
    deep = rdb.xadd("events", {"channel": "m", "body": "[" * 30_000 + "]" * 30_000})
    good2 = rdb.xadd("events", {"channel": "m", "body": "2"})
    bridge.process(read_new(bridge))
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == [good1, good2]
    assert [d["original_id"] for d in dead_letters(rdb)] == [deep]
    assert pending_ids(rdb) == []


# -- process: failures -------------------------------------------------------------------


def block_history(rdb, room: str) -> None:
    """Make the history of ``room`` unwritable (a string where its stream would be): the
    publish script fails at that room's event."""
    rdb.set(keys.history("events", "/", room), "not a stream")


def test_nothing_is_acked_when_the_publish_fails(bridge, rdb, queue):
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1", "room": "r"})
    block_history(rdb, "r")
    with pytest.raises(PublishFailed, match="WRONGTYPE"):
        bridge.process(read_new(bridge))
    assert pending_ids(rdb) == [stream_id]
    assert (bridge.stats["acked"], bridge.stats["emitted"]) == (0, 0)
    assert dead_letters(rdb) == []
    assert queue() == []


def test_a_failed_publish_holds_back_the_entries_after_it(bridge, rdb, queue):
    # The script stops at the failing event: the third cannot overtake the second.
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i), "room": f"r{i}"}) for i in range(3)]
    block_history(rdb, "r1")
    with pytest.raises(PublishFailed):
        bridge.process(read_new(bridge))
    assert pending_ids(rdb) == ids[1:]
    first = [json.loads(m)["data"][1] for m in queue()]
    assert [m["entry"] for m in first] == ids[:1]
    # Once the room can be written again, the rest go out in order.
    rdb.delete(keys.history("events", "/", "r1"))
    bridge.drain_own_pending()
    later = [json.loads(m)["data"][1] for m in queue()]
    assert [m["entry"] for m in later] == ids[1:]
    assert pending_ids(rdb) == []
    # The clock counted the published prefix: later positions come after it.
    positions = [StreamId.parse(m["id"]) for m in first + later]
    assert positions == sorted(set(positions))


def test_in_a_backlog_a_batch_in_flight_never_overtakes_one_that_stopped_part_way(rdb, queue):
    # Batches of 2: the first stops at its second event; the second batch, already
    # sent behind it, must publish nothing.
    bridge = make_bridge(rdb, batch_size=2)
    bridge.ensure_group()
    rooms = ["r0", "r1", "r2", "r3", "r4", "r5"]
    ids = [
        rdb.xadd("events", {"channel": "m", "body": str(i), "room": r}) for i, r in enumerate(rooms)
    ]
    block_history(rdb, "r1")
    bridge.step()  # reads ahead: the first batch in flight, the second read
    assert [len(b.valid) for b, _ in bridge._in_flight if b is not None] == [2]
    with pytest.raises(PublishFailed, match="WRONGTYPE"):
        bridge.step()  # sends the second batch, then reads the first one's failure
    [(second, _)] = bridge._in_flight
    assert [i for i, _ in second.valid] == ids[2:4]
    with pytest.raises(PublishFailed, match="stopped part-way"):
        bridge._collect_all()  # the second batch's script refused
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == ids[:1]
    assert pending_ids(rdb) == ids[1:]  # the rest of the first, the second, the third read
    # Once the room can be written again, everything goes out in order.
    rdb.delete(keys.history("events", "/", "r1"))
    bridge.drain_own_pending()
    while bridge.stats["emitted"] < len(ids):
        bridge.step()
    published = [json.loads(m)["data"][1] for m in queue()]
    assert [m["entry"] for m in published] == ids[1:]
    assert pending_ids(rdb) == []


def test_in_a_backlog_two_round_trips_are_in_flight_and_all_goes_out_in_order(rdb, queue):
    bridge = make_bridge(rdb, batch_size=3)
    bridge.ensure_group()
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i)}) for i in range(20)]
    depths = []
    while bridge.stats["acked"] < len(ids):
        bridge.step()
        depths.append(len(bridge._in_flight))
    assert 1 in depths  # a round trip still in flight between two steps
    published = [json.loads(m)["data"][1] for m in queue()]
    assert [m["entry"] for m in published] == ids
    positions = [StreamId.parse(m["id"]) for m in published]
    assert positions == sorted(set(positions))
    assert pending_ids(rdb) == []


@pytest.mark.parametrize("error", [redis.ConnectionError("gone"), redis.TimeoutError("slow")])
def test_a_lost_connection_during_publish_is_raised_and_nothing_acked(
    bridge, rdb, monkeypatch, error
):
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]

    def lost(*args, **kwargs):
        raise error

    monkeypatch.setattr(bridge._append, "command", lost)
    with pytest.raises(type(error)):
        bridge.process(read_new(bridge))
    assert pending_ids(rdb) == ids
    assert bridge.stats["acked"] == 0


def test_an_entry_another_bridge_published_is_not_published_again(bridge, rdb, queue):
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1"})
    entries = read_new(bridge)
    other = make_bridge(rdb, consumer="c2")
    other.ensure_group()
    rdb.xclaim("events", "bridge", "c2", 0, [stream_id])
    other.process(entries, redelivered=True)  # it claimed, published and acked
    bridge.process(entries)  # the slow first reader finishes its batch
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == [stream_id]
    assert len(rdb.xrange(keys.history("events", "/", None))) == 1


def test_entries_trimmed_while_pending_are_acked_not_emitted(bridge, rdb, queue):
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge)
    bridge.process([(stream_id, None)])
    assert queue() == []
    assert dead_letters(rdb) == []
    assert pending_ids(rdb) == []
    assert bridge.stats["trimmed"] == 1


# -- redelivery: own pending, claims, delivery limit ---------------------------------------


def test_drain_own_pending_replays_what_a_crashed_run_left(rdb, queue):
    crashed = make_bridge(rdb)
    crashed.ensure_group()
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]
    read_new(crashed)  # read, then "crash" before processing
    assert pending_ids(rdb) == ids
    restarted = make_bridge(rdb, batch_size=2)  # same consumer name, pages of 2
    restarted.ensure_group()
    restarted.drain_own_pending()
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == ids
    assert pending_ids(rdb) == []


def test_drain_own_pending_leaves_other_consumers_alone(rdb, queue):
    bridge = make_bridge(rdb)
    bridge.ensure_group()
    other = rdb.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge, consumer="c2")
    bridge.drain_own_pending()
    assert queue() == []
    assert pending_ids(rdb, "c2") == [other]


def test_an_entry_delivered_too_often_goes_to_dead_letters(rdb, queue):
    bridge = make_bridge(rdb, max_deliveries=2)
    bridge.ensure_group()
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge)  # delivery 1
    rdb.xreadgroup("bridge", "c1", {"events": "0"})  # delivery 2 (a failed retry)
    bridge.drain_own_pending()  # delivery 3 > 2
    assert queue() == []
    [dead] = dead_letters(rdb)
    assert dead["reason"] == "delivered 3 times (limit 2)"
    assert dead["original_id"] == stream_id
    assert pending_ids(rdb) == []


def test_an_entry_at_the_delivery_limit_is_still_published(rdb, queue):
    bridge = make_bridge(rdb, max_deliveries=2)
    bridge.ensure_group()
    rdb.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge)  # delivery 1
    bridge.drain_own_pending()  # delivery 2 == limit
    assert len(queue()) == 1
    assert dead_letters(rdb) == []


def test_first_delivery_is_never_counted_against_the_limit(rdb, queue):
    bridge = make_bridge(rdb, max_deliveries=1)
    bridge.ensure_group()
    rdb.xadd("events", {"channel": "m", "body": "1"})
    bridge.process(read_new(bridge))
    assert len(queue()) == 1


def test_delivery_limit_holds_when_other_consumers_pending_entries_interleave(rdb, queue):
    bridge = make_bridge(rdb, max_deliveries=1)
    bridge.ensure_group()
    first = rdb.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge, count=1)  # c1: first
    for i in range(6):
        rdb.xadd("events", {"channel": "m", "body": str(i)})
    read_new(bridge, consumer="c2")  # c2: six entries in between
    last = rdb.xadd("events", {"channel": "m", "body": "9"})
    read_new(bridge, count=1)  # c1: last
    bridge.drain_own_pending()  # both of c1's entries: delivery 2 > limit 1
    assert sorted(d["original_id"] for d in dead_letters(rdb)) == [first, last]
    assert queue() == []


def idle(rdb, consumer: str, ids: list[str], ms: int = 60_000) -> None:
    """Make entries look pending on ``consumer`` for ``ms`` (no sleeping)."""
    rdb.xclaim("events", "bridge", consumer, min_idle_time=0, message_ids=ids, idle=ms)


def test_claim_idle_takes_over_a_dead_consumers_entries(bridge, rdb, queue):
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]
    read_new(bridge, consumer="dead-one")
    idle(rdb, "dead-one", ids[:2])  # the third was read just now: not idle
    bridge.claim_idle()
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == ids[:2]
    assert pending_ids(rdb) == [ids[2]]
    assert pending_ids(rdb, "dead-one") == [ids[2]]
    assert bridge.stats["claimed"] == 2


def test_claim_idle_pages_through_many_entries(rdb, queue):
    bridge = make_bridge(rdb, batch_size=2)
    bridge.ensure_group()
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i)}) for i in range(5)]
    read_new(bridge, consumer="dead-one")
    idle(rdb, "dead-one", ids)
    bridge.claim_idle()
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == ids
    assert pending_ids(rdb) == []


def test_claimed_entries_over_the_limit_are_dead_lettered(rdb, queue):
    bridge = make_bridge(rdb, max_deliveries=2)
    bridge.ensure_group()
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge, consumer="dead-one")  # delivery 1
    idle(rdb, "dead-one", [stream_id])  # XCLAIM counts as delivery 2
    bridge.claim_idle()  # XAUTOCLAIM: delivery 3
    assert queue() == []
    [dead] = dead_letters(rdb)
    assert dead["reason"] == "delivered 3 times (limit 2)"


# -- step and trim -----------------------------------------------------------------------


def test_step_reads_and_processes_new_entries(rdb, queue):
    bridge = make_bridge(rdb, block_ms=1)
    bridge.ensure_group()
    ids = [rdb.xadd("events", {"channel": "m", "body": str(i)}) for i in range(2)]
    bridge.step()
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == ids
    assert pending_ids(rdb) == []


def test_step_notices_a_deleted_stream(rdb):
    bridge = make_bridge(rdb, block_ms=1)
    bridge.ensure_group()
    rdb.delete("events")
    with pytest.raises(redis.ResponseError, match=r"^NOGROUP"):
        bridge.step()


class Spy:
    def __init__(self, client, monkeypatch) -> None:
        self.commands: list[list[str]] = []
        real = client.execute_command

        def execute_command(*args, **options):
            self.commands.append([a.decode() if isinstance(a, bytes) else str(a) for a in args])
            return real(*args, **options)

        monkeypatch.setattr(client, "execute_command", execute_command)

    def names(self) -> list[str]:
        return [c[0].upper() for c in self.commands]


def test_trim_does_nothing_while_the_stream_is_short(rdb, monkeypatch):
    bridge = make_bridge(rdb, maxlen=5)
    bridge.ensure_group()
    for i in range(5):
        rdb.xadd("events", {"channel": "m", "body": str(i)})
    spy = Spy(rdb, monkeypatch)
    bridge.trim()
    assert "XTRIM" not in spy.names()


def test_trim_trims_approximately_with_a_bounded_amount_of_work(rdb, monkeypatch):
    bridge = make_bridge(rdb, maxlen=5, batch_size=3)
    bridge.ensure_group()
    for i in range(300):
        rdb.xadd("events", {"channel": "m", "body": str(i)})
    spy = Spy(rdb, monkeypatch)
    bridge.trim()
    [xtrim] = [c for c in spy.commands if c[0].upper() == "XTRIM"]
    assert xtrim == ["XTRIM", "events", "MAXLEN", "~", "5", "LIMIT", "60"]


# -- the loop ----------------------------------------------------------------------------


def test_run_sets_up_replays_and_stops(rdb, queue, monkeypatch):
    bridge = make_bridge(rdb, block_ms=1)
    stream_id = rdb.xadd("events", {"channel": "m", "body": "1"})
    real_step = bridge.step

    def step_once():
        real_step()
        bridge.stop()

    monkeypatch.setattr(bridge, "step", step_once)
    bridge.run()
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == [stream_id]
    assert pending_ids(rdb) == []


def test_run_waits_while_the_key_is_not_a_stream(rdb, monkeypatch):
    bridge = make_bridge(rdb, block_ms=1, backoff_min_s=0.001, backoff_max_s=0.001)
    rdb.set("events", "not a stream")
    calls = []
    real_ensure = bridge.ensure_group

    def ensure_group():
        calls.append(1)
        if len(calls) == 3:
            rdb.delete("events")  # an operator fixed it
        real_ensure()

    monkeypatch.setattr(bridge, "ensure_group", ensure_group)
    monkeypatch.setattr(bridge, "step", bridge.stop)
    bridge.run()
    assert len(calls) == 3  # refused, refused, then ready
    assert rdb.type("events") == "stream"


def test_a_consumer_name_is_judged_only_where_a_pid_means_something():
    me = owner_token()
    host, place, _, _ = me.split("|")
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            assert verdict(f"{host}|{place}|{exited}|abcd1234") == "dead"
            assert verdict(f"{host}|{place}|{child.pid}|abcd1234") == "alive"
            # Another host, boot or PID namespace: its pid means nothing here.
            assert verdict(f"other|{place}|{exited}|abcd1234") == "unknown"
            assert verdict(f"{host}|other-boot/1|{exited}|abcd1234") == "unknown"
            assert verdict("1") == "unknown"  # an older bridge's key
        finally:
            child.kill()


def _name(rdb, consumer: str = "c1") -> ConsumerName:
    return ConsumerName(rdb, f"events:alive:bridge:{consumer}", consumer, structlog.get_logger())


def test_a_name_is_refused_while_a_live_bridge_holds_it_and_freed_on_stop(rdb):
    first, second = _name(rdb), _name(rdb)
    first.claim(threading.Event())
    assert rdb.get(first.key) == first.owner
    live = first.owner.rsplit("|", 2)[0] + f"|{os.getpid()}|livebridge"  # alive: this process
    rdb.set(first.key, live, ex=15)
    with pytest.raises(DuplicateConsumer, match="held by a live bridge"):
        second.claim(threading.Event())
    with pytest.raises(DuplicateConsumer, match="taken by another bridge"):
        first.keep()
    rdb.set(first.key, first.owner)
    first.release()
    assert not rdb.exists(first.key)
    second.claim(threading.Event())  # free now
    assert rdb.get(second.key) == second.owner


def test_a_name_whose_holder_cannot_be_judged_is_taken_once_its_key_expires(rdb):
    name = _name(rdb)
    rdb.set(name.key, "another-host|boot/1|1|abcd1234", px=300)  # its last refresh
    name.claim(threading.Event())  # waits for the key to expire, then takes it
    assert rdb.get(name.key) == name.owner


def test_a_redis_that_lost_the_publish_script_gets_it_again(bridge, rdb, queue):
    # A restarted or failed-over Redis has no scripts: the batch stays pending, the
    # script is loaded again and the replay publishes it.
    first = rdb.xadd("events", {"channel": "m", "body": "1"})
    bridge.process(read_new(bridge))
    rdb.script_flush()
    second = rdb.xadd("events", {"channel": "m", "body": "2"})
    with pytest.raises(PublishFailed, match="not loaded"):
        bridge.process(read_new(bridge))
    assert pending_ids(rdb) == [second]
    bridge.drain_own_pending()
    assert [json.loads(m)["data"][1]["entry"] for m in queue()] == [first, second]
    assert pending_ids(rdb) == []
