"""The bridge (bridge/daemon.py) against fakeredis: group set-up, process, acks, claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import redis
import structlog

from bridge.consumer_name import ConsumerName, DuplicateConsumer, owner_token, verdict
from bridge.daemon import Bridge, NotReady, PublishFailed, _entries
from streambridge.contract import Event
from streambridge.queue import emit_message
from streambridge.settings import BridgeSettings

QUEUE = "flask-socketio"


def make_bridge(fake, consumer: str = "c1", **overrides) -> Bridge:
    settings = BridgeSettings(redis_url="redis://unused", consumer=consumer, **overrides)
    return Bridge(settings, client=fake)


@pytest.fixture
def bridge(fake):
    bridge = make_bridge(fake)
    bridge.ensure_group()
    return bridge


@pytest.fixture
def queue(fake):
    """What the bridge publishes on the Socket.IO queue channel, in order."""
    pubsub = fake.pubsub()
    pubsub.subscribe(QUEUE)
    assert pubsub.get_message(timeout=0)["type"] == "subscribe"

    def received() -> list[str]:
        messages = []
        while (
            message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        ) is not None:
            assert message["channel"] == QUEUE
            messages.append(message["data"])
        return messages

    yield received
    pubsub.close()


def read_new(bridge: Bridge, consumer: str | None = None, count: int | None = None):
    s = bridge.settings
    reply = bridge.redis.xreadgroup(s.group, consumer or s.consumer, {s.stream: ">"}, count=count)
    return _entries(reply)


def pending_ids(fake, consumer: str | None = None) -> list[str]:
    rows = fake.xpending_range("events", "bridge", min="-", max="+", count=1000)
    return [r["message_id"] for r in rows if consumer is None or r["consumer"] == consumer]


def dead_letters(fake) -> list[dict[str, str]]:
    return [fields for _, fields in fake.xrange("events:dead")]


# -- ensure_group ------------------------------------------------------------------------


def test_ensure_group_creates_stream_group_and_epoch(fake):
    bridge = make_bridge(fake)
    bridge.ensure_group()
    assert fake.type("events") == "stream"
    assert [g["name"] for g in fake.xinfo_groups("events")] == ["bridge"]
    epoch = fake.get("events:epoch")
    assert epoch
    assert len(epoch) == 32
    assert bridge.epoch == epoch


def test_ensure_group_again_keeps_the_epoch(fake):
    first = make_bridge(fake)
    first.ensure_group()
    second = make_bridge(fake, consumer="c2")
    second.ensure_group()  # BUSYGROUP: tolerated
    first.ensure_group()
    assert first.epoch == second.epoch == fake.get("events:epoch")


def test_ensure_group_tolerates_a_group_made_by_someone_else(fake):
    fake.xgroup_create("events", "bridge", id="0", mkstream=True)
    bridge = make_bridge(fake)
    bridge.ensure_group()
    assert bridge.epoch
    assert fake.get("events:epoch") == bridge.epoch


def test_a_recreated_stream_gets_a_new_epoch(fake):
    bridge = make_bridge(fake)
    bridge.ensure_group()
    old = bridge.epoch
    fake.delete("events")
    bridge.ensure_group()
    assert bridge.epoch != old
    assert fake.get("events:epoch") == bridge.epoch


@pytest.mark.parametrize(
    ("make_key", "kind"),
    [
        (lambda r: r.set("events", "x"), "string"),
        (lambda r: r.rpush("events", "x"), "list"),
        (lambda r: r.hset("events", "a", "b"), "hash"),
    ],
)
def test_ensure_group_refuses_a_key_of_another_type(fake, make_key, kind):
    make_key(fake)
    with pytest.raises(NotReady, match=f"holds a {kind}, not a stream"):
        make_bridge(fake).ensure_group()
    assert fake.type("events") == kind  # left alone
    assert not fake.exists("events:epoch")


def test_ensure_group_reraises_other_redis_errors(fake, monkeypatch):
    bridge = make_bridge(fake)

    def broken(*args, **kwargs):
        raise redis.ResponseError("ERR something else")

    monkeypatch.setattr(fake, "xgroup_create", broken)
    with pytest.raises(redis.ResponseError, match="something else"):
        bridge.ensure_group()


# -- process: the happy path -----------------------------------------------------------


def test_valid_entries_are_published_in_order_and_acked(bridge, fake, queue):
    first = fake.xadd("events", {"channel": "message", "body": '{"n": 1}'})
    second = fake.xadd(
        "events", {"channel": "chat", "body": '"hi"', "room": "user:bob", "namespace": "/x"}
    )
    entries = read_new(bridge)
    bridge.process(entries)
    assert queue() == [
        emit_message(Event.parse({"channel": "message", "body": '{"n": 1}'}), first, bridge.epoch),
        emit_message(
            Event.parse({"channel": "chat", "body": '"hi"', "room": "user:bob", "namespace": "/x"}),
            second,
            bridge.epoch,
        ),
    ]
    assert pending_ids(fake) == []
    assert dead_letters(fake) == []
    assert bridge.stats == {
        "read": 2,
        "emitted": 2,
        "acked": 2,
        "dead": 0,
        "claimed": 0,
        "trimmed": 0,
    }


def test_published_message_carries_id_and_epoch(bridge, fake, queue):
    stream_id = fake.xadd("events", {"channel": "m", "body": "[1]"})
    bridge.process(read_new(bridge))
    [message] = queue()
    data = json.loads(message)["data"]
    assert data == [[1], {"id": stream_id, "epoch": fake.get("events:epoch"), "streambridge": 1}]


def test_byte_fields_are_accepted(bridge, fake, queue):
    stream_id = fake.xadd("events", {"channel": "m", "body": '"x"'})
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
def test_invalid_entries_go_to_dead_letters_and_are_acked(bridge, fake, queue, fields, reason):
    stream_id = fake.xadd("events", fields)
    bridge.process(read_new(bridge))
    assert queue() == []
    [dead] = dead_letters(fake)
    assert dead["reason"].startswith(reason)
    assert dead["original_id"] == stream_id
    assert dead["consumer"] == "c1"
    for name, value in fields.items():
        assert dead[name] == value
    assert pending_ids(fake) == []
    assert (bridge.stats["dead"], bridge.stats["acked"], bridge.stats["emitted"]) == (1, 1, 0)


def test_body_over_the_configured_limit_is_dead(fake, queue):
    bridge = make_bridge(fake, max_body_bytes=5)
    bridge.ensure_group()
    fake.xadd("events", {"channel": "m", "body": '"12345"'})
    bridge.process(read_new(bridge))
    assert queue() == []
    [dead] = dead_letters(fake)
    assert dead["reason"] == "body: body is 7 bytes, more than the limit of 5"


def test_a_mixed_batch_publishes_the_good_and_dead_letters_the_bad(bridge, fake, queue):
    good1 = fake.xadd("events", {"channel": "m", "body": "1"})
    bad = fake.xadd("events", {"channel": "m", "body": "{oops"})
    good2 = fake.xadd("events", {"channel": "m", "body": "2"})
    bridge.process(read_new(bridge))
    ids = [json.loads(m)["data"][1]["id"] for m in queue()]
    assert ids == [good1, good2]
    assert [d["original_id"] for d in dead_letters(fake)] == [bad]
    assert pending_ids(fake) == []


def test_non_utf8_entry_is_dead_lettered_readably(fake, queue):
    bridge = make_bridge(fake)
    bridge.ensure_group()
    stream_id = fake.xadd("events", {"channel": "m", "body": "1"})
    bridge.process([(stream_id, {b"channel": b"m", b"body": b"\xff"})])
    [dead] = dead_letters(fake)
    assert dead["reason"] == "field b'body' is not UTF-8"
    assert dead["body"] == "\\xff"
    assert queue() == []


def test_dead_letters_are_trimmed_approximately(fake, monkeypatch):
    bridge = make_bridge(fake, dead_maxlen=7)
    bridge.ensure_group()
    fake.xadd("events", {"channel": "bad channel", "body": "1"})
    sent = []
    real_pipeline = fake.pipeline

    def pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a, **kw):
            sent.extend(cmd for cmd, _ in pipe.command_stack)
            return real_execute(*a, **kw)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(fake, "pipeline", pipeline)
    bridge.process(read_new(bridge))
    [xadd] = [cmd for cmd in sent if cmd[0] == "XADD"]
    assert [a.decode() if isinstance(a, bytes) else a for a in xadd[:5]] == [
        "XADD",
        "events:dead",
        "MAXLEN",
        "~",
        "7",
    ]


def test_a_deeply_nested_body_is_dead_lettered_and_the_batch_goes_on(bridge, fake, queue):
    good1 = fake.xadd("events", {"channel": "m", "body": "1"})
    deep = fake.xadd("events", {"channel": "m", "body": "[" * 30_000 + "]" * 30_000})
    good2 = fake.xadd("events", {"channel": "m", "body": "2"})
    bridge.process(read_new(bridge))
    assert [json.loads(m)["data"][1]["id"] for m in queue()] == [good1, good2]
    assert [d["original_id"] for d in dead_letters(fake)] == [deep]
    assert pending_ids(fake) == []


# -- process: failures -------------------------------------------------------------------


def fail_publishes(fake, monkeypatch, error: Exception, which: set[int] | None = None):
    """Make PUBLISH results in the bridge's pipelines come back as ``error``
    (all of them, or the n-th ones in ``which``)."""
    real_pipeline = fake.pipeline

    def pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(raise_on_error=True):
            names = [str(cmd[0]).upper() for cmd, _ in pipe.command_stack]
            results = real_execute(raise_on_error=raise_on_error)
            out, n = [], 0
            for name, result in zip(names, results, strict=True):
                if name == "PUBLISH":
                    if which is None or n in which:
                        result = error
                    n += 1
                out.append(result)
            return out

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(fake, "pipeline", pipeline)


def test_nothing_is_acked_when_the_publish_fails(bridge, fake, monkeypatch):
    stream_id = fake.xadd("events", {"channel": "m", "body": "1"})
    fail_publishes(fake, monkeypatch, redis.ResponseError("READONLY replica"))
    with pytest.raises(PublishFailed, match="READONLY"):
        bridge.process(read_new(bridge))
    assert pending_ids(fake) == [stream_id]
    assert (bridge.stats["acked"], bridge.stats["emitted"]) == (0, 0)
    assert dead_letters(fake) == []


def test_a_failed_publish_holds_back_the_entries_after_it(bridge, fake, monkeypatch):
    # Acking the third would let it overtake the second: room order would break.
    ids = [fake.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]
    fail_publishes(fake, monkeypatch, redis.ResponseError("OOM"), which={1})
    with pytest.raises(PublishFailed):
        bridge.process(read_new(bridge))
    assert pending_ids(fake) == ids[1:]
    assert (bridge.stats["acked"], bridge.stats["emitted"]) == (1, 1)


@pytest.mark.parametrize("error", [redis.ConnectionError("gone"), redis.TimeoutError("slow")])
def test_a_lost_connection_during_publish_is_raised_and_nothing_acked(
    bridge, fake, monkeypatch, error
):
    ids = [fake.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]
    fail_publishes(fake, monkeypatch, error, which={1})
    with pytest.raises(type(error)):
        bridge.process(read_new(bridge))
    assert pending_ids(fake) == ids
    assert bridge.stats["acked"] == 0


def test_entries_trimmed_while_pending_are_acked_not_emitted(bridge, fake, queue):
    stream_id = fake.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge)
    bridge.process([(stream_id, None)])
    assert queue() == []
    assert dead_letters(fake) == []
    assert pending_ids(fake) == []
    assert bridge.stats["trimmed"] == 1


# -- redelivery: own pending, claims, delivery limit ---------------------------------------


def test_drain_own_pending_replays_what_a_crashed_run_left(fake, queue):
    crashed = make_bridge(fake)
    crashed.ensure_group()
    ids = [fake.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]
    read_new(crashed)  # read, then "crash" before processing
    assert pending_ids(fake) == ids
    restarted = make_bridge(fake, batch_size=2)  # same consumer name, pages of 2
    restarted.ensure_group()
    restarted.drain_own_pending()
    assert [json.loads(m)["data"][1]["id"] for m in queue()] == ids
    assert pending_ids(fake) == []


def test_drain_own_pending_leaves_other_consumers_alone(fake, queue):
    bridge = make_bridge(fake)
    bridge.ensure_group()
    other = fake.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge, consumer="c2")
    bridge.drain_own_pending()
    assert queue() == []
    assert pending_ids(fake, "c2") == [other]


def test_an_entry_delivered_too_often_goes_to_dead_letters(fake, queue):
    bridge = make_bridge(fake, max_deliveries=2)
    bridge.ensure_group()
    stream_id = fake.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge)  # delivery 1
    fake.xreadgroup("bridge", "c1", {"events": "0"})  # delivery 2 (a failed retry)
    bridge.drain_own_pending()  # delivery 3 > 2
    assert queue() == []
    [dead] = dead_letters(fake)
    assert dead["reason"] == "delivered 3 times (limit 2)"
    assert dead["original_id"] == stream_id
    assert pending_ids(fake) == []


def test_an_entry_at_the_delivery_limit_is_still_published(fake, queue):
    bridge = make_bridge(fake, max_deliveries=2)
    bridge.ensure_group()
    fake.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge)  # delivery 1
    bridge.drain_own_pending()  # delivery 2 == limit
    assert len(queue()) == 1
    assert dead_letters(fake) == []


def test_first_delivery_is_never_counted_against_the_limit(fake, queue):
    bridge = make_bridge(fake, max_deliveries=1)
    bridge.ensure_group()
    fake.xadd("events", {"channel": "m", "body": "1"})
    bridge.process(read_new(bridge))
    assert len(queue()) == 1


def test_delivery_limit_holds_when_other_consumers_pending_entries_interleave(fake, queue):
    bridge = make_bridge(fake, max_deliveries=1)
    bridge.ensure_group()
    first = fake.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge, count=1)  # c1: first
    for i in range(6):
        fake.xadd("events", {"channel": "m", "body": str(i)})
    read_new(bridge, consumer="c2")  # c2: six entries in between
    last = fake.xadd("events", {"channel": "m", "body": "9"})
    read_new(bridge, count=1)  # c1: last
    bridge.drain_own_pending()  # both of c1's entries: delivery 2 > limit 1
    assert sorted(d["original_id"] for d in dead_letters(fake)) == [first, last]
    assert queue() == []


def idle(fake, consumer: str, ids: list[str], ms: int = 60_000) -> None:
    """Make entries look pending on ``consumer`` for ``ms`` (no sleeping)."""
    fake.xclaim("events", "bridge", consumer, min_idle_time=0, message_ids=ids, idle=ms)


def test_claim_idle_takes_over_a_dead_consumers_entries(bridge, fake, queue):
    ids = [fake.xadd("events", {"channel": "m", "body": str(i)}) for i in range(3)]
    read_new(bridge, consumer="dead-one")
    idle(fake, "dead-one", ids[:2])  # the third was read just now: not idle
    bridge.claim_idle()
    assert [json.loads(m)["data"][1]["id"] for m in queue()] == ids[:2]
    assert pending_ids(fake) == [ids[2]]
    assert pending_ids(fake, "dead-one") == [ids[2]]
    assert bridge.stats["claimed"] == 2


def test_claim_idle_pages_through_many_entries(fake, queue):
    bridge = make_bridge(fake, batch_size=2)
    bridge.ensure_group()
    ids = [fake.xadd("events", {"channel": "m", "body": str(i)}) for i in range(5)]
    read_new(bridge, consumer="dead-one")
    idle(fake, "dead-one", ids)
    bridge.claim_idle()
    assert [json.loads(m)["data"][1]["id"] for m in queue()] == ids
    assert pending_ids(fake) == []


def test_claimed_entries_over_the_limit_are_dead_lettered(fake, queue):
    bridge = make_bridge(fake, max_deliveries=2)
    bridge.ensure_group()
    stream_id = fake.xadd("events", {"channel": "m", "body": "1"})
    read_new(bridge, consumer="dead-one")  # delivery 1
    idle(fake, "dead-one", [stream_id])  # XCLAIM counts as delivery 2
    bridge.claim_idle()  # XAUTOCLAIM: delivery 3
    assert queue() == []
    [dead] = dead_letters(fake)
    assert dead["reason"] == "delivered 3 times (limit 2)"


# -- step and trim -----------------------------------------------------------------------


def test_step_reads_and_processes_new_entries(fake, queue):
    bridge = make_bridge(fake, block_ms=1)
    bridge.ensure_group()
    ids = [fake.xadd("events", {"channel": "m", "body": str(i)}) for i in range(2)]
    bridge.step()
    assert [json.loads(m)["data"][1]["id"] for m in queue()] == ids
    assert pending_ids(fake) == []


def test_step_notices_a_deleted_stream(fake):
    bridge = make_bridge(fake, block_ms=1)
    bridge.ensure_group()
    fake.delete("events")
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


def test_trim_does_nothing_while_the_stream_is_short(fake, monkeypatch):
    bridge = make_bridge(fake, maxlen=5)
    bridge.ensure_group()
    for i in range(5):
        fake.xadd("events", {"channel": "m", "body": str(i)})
    spy = Spy(fake, monkeypatch)
    bridge.trim()
    assert "XTRIM" not in spy.names()


def test_trim_trims_approximately_with_a_bounded_amount_of_work(fake, monkeypatch):
    bridge = make_bridge(fake, maxlen=5, batch_size=3)
    bridge.ensure_group()
    for i in range(300):
        fake.xadd("events", {"channel": "m", "body": str(i)})
    spy = Spy(fake, monkeypatch)
    bridge.trim()
    [xtrim] = [c for c in spy.commands if c[0].upper() == "XTRIM"]
    assert xtrim == ["XTRIM", "events", "MAXLEN", "~", "5", "LIMIT", "60"]


# -- the loop ----------------------------------------------------------------------------


def test_run_sets_up_replays_and_stops(fake, queue, monkeypatch):
    bridge = make_bridge(fake, block_ms=1)
    stream_id = fake.xadd("events", {"channel": "m", "body": "1"})
    real_step = bridge.step

    def step_once():
        real_step()
        bridge.stop()

    monkeypatch.setattr(bridge, "step", step_once)
    bridge.run()
    assert [json.loads(m)["data"][1]["id"] for m in queue()] == [stream_id]
    assert pending_ids(fake) == []


def test_run_waits_while_the_key_is_not_a_stream(fake, monkeypatch):
    bridge = make_bridge(fake, block_ms=1, backoff_min_s=0.001, backoff_max_s=0.001)
    fake.set("events", "not a stream")
    calls = []
    real_ensure = bridge.ensure_group

    def ensure_group():
        calls.append(1)
        if len(calls) == 3:
            fake.delete("events")  # an operator fixed it
        real_ensure()

    monkeypatch.setattr(bridge, "ensure_group", ensure_group)
    monkeypatch.setattr(bridge, "step", bridge.stop)
    bridge.run()
    assert len(calls) == 3  # refused, refused, then ready
    assert fake.type("events") == "stream"


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


def _name(fake, consumer: str = "c1") -> ConsumerName:
    return ConsumerName(fake, f"events:alive:bridge:{consumer}", consumer, structlog.get_logger())


def test_a_name_is_refused_while_a_live_bridge_holds_it_and_freed_on_stop(fake):
    first, second = _name(fake), _name(fake)
    first.claim(threading.Event())
    assert fake.get(first.key) == first.owner
    live = first.owner.rsplit("|", 2)[0] + f"|{os.getpid()}|livebridge"  # alive: this process
    fake.set(first.key, live, ex=15)
    with pytest.raises(DuplicateConsumer, match="held by a live bridge"):
        second.claim(threading.Event())
    with pytest.raises(DuplicateConsumer, match="taken by another bridge"):
        first.keep()
    fake.set(first.key, first.owner)
    first.release()
    assert not fake.exists(first.key)
    second.claim(threading.Event())  # free now
    assert fake.get(second.key) == second.owner


def test_a_name_whose_holder_cannot_be_judged_is_taken_once_its_key_expires(fake):
    name = _name(fake)
    fake.set(name.key, "another-host|boot/1|1|abcd1234", px=300)  # its last refresh
    name.claim(threading.Event())  # waits for the key to expire, then takes it
    assert fake.get(name.key) == name.owner
