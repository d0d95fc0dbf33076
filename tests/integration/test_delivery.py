"""Delivery guarantees, proven by killing things: real processes, real redis-server."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from streambridge import keys
from streambridge.embedded_redis import RedisServer
from tests.support import (
    RECOVERY,
    Bridge,
    Client,
    Web,
    all_published,
    cli,
    positions_of,
    start_together,
    wait_until,
)

pytestmark = pytest.mark.integration


def unique_in_order(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def connect(clients, web, user, auth=None) -> Client:
    client = Client().connect(web, web.login(user), auth=auth)
    clients.append(client)
    return client


def produce(client, n: int, *, rate: float | None = None, room_of=None) -> list[str]:
    """XADD n events (optionally paced at ``rate``/s); returns their ids."""
    ids = []
    start = time.monotonic()
    for i in range(n):
        fields = {"channel": "tick", "body": str(i)}
        room = room_of(i) if room_of else None
        if room:
            fields["room"] = room
        ids.append(client.xadd("events", fields))
        if rate:
            ahead = start + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting for a result
    return ids


def produce_until(
    client, stop: threading.Event, *, rate: float, then: int
) -> tuple[threading.Thread, list[str]]:
    """A started thread that XADDs ticks at ``rate`` until ``stop`` is set (however long
    the test's steps take), then ``then`` more; and their ids, growing as it goes."""
    produced: list[str] = []

    def run() -> None:
        while not stop.is_set():
            produced.extend(produce(client, 100, rate=rate))
        produced.extend(produce(client, then, rate=rate))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, produced


def dead_count(redis_client) -> int:
    return redis_client.xlen("events:dead") if redis_client.exists("events:dead") else 0


def all_acked(redis_client) -> bool:
    return all_published(redis_client)


def test_bridge_sigkilled_three_times_loses_nothing(env, tmp_path, processes, web, clients,
                                                    redis_client):  # fmt: skip
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    alice = connect(clients, web, "alice")
    bridge = Bridge(env, tmp_path, name="bridge-a")
    processes.append(bridge)
    bridge.start()
    killed = threading.Event()
    producer, produced = produce_until(redis_client, killed, rate=1_000, then=1_000)
    try:
        for n in range(1, 4):
            # Kill a bridge that is working: after it is ready, at a random moment.
            wait_until(lambda n=n: bridge.output().count('"bridge.ready"') >= n, 15, "bridge ready")
            pause_until = time.monotonic() + rng.uniform(0.2, 1.2)
            wait_until(lambda t=pause_until: time.monotonic() >= t, 5, "kill moment")
            bridge.process.send_signal(signal.SIGKILL)
            bridge.process.wait(5)
            bridge.start(wait=False)  # same consumer name: it replays its own pending first
    finally:
        killed.set()
    producer.join(30)
    assert not producer.is_alive()
    wait_until(lambda: set(alice.ids("tick")) >= set(produced), 60, f"all events (seed {seed})")
    assert unique_in_order(alice.ids("tick")) == produced
    wait_until(lambda: all_acked(redis_client), 10, "XPENDING empty")
    assert bridge.output().count('"bridge.starting"') == 4  # the first run and 3 restarts


def test_surviving_bridge_claims_a_dead_bridges_pending(env, tmp_path, processes, web, clients,
                                                        redis_client):  # fmt: skip
    alice = connect(clients, web, "alice")
    env = dict(env, STREAMBRIDGE_CLAIM_IDLE_MS="1000", STREAMBRIDGE_BATCH_SIZE="50")
    a, b = Bridge(env, tmp_path, name="bridge-a"), Bridge(env, tmp_path, name="bridge-b")
    processes.extend([a, b])
    a.start()
    b.start()
    frozen = threading.Event()  # bridge-a, with entries in hand
    producer, produced = produce_until(redis_client, frozen, rate=1_500, then=500)
    wait_until(lambda: len(alice.ids("tick")) >= 500, 20, "first events")
    # Freeze bridge-a with entries in hand, then kill it. Frozen between two reads it
    # holds none (bridge-b takes them all): thaw it and freeze it again until it does.
    deadline = time.monotonic() + 30
    while True:
        a.process.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: _pending_of(redis_client, "bridge-a") > 0, 0.5, "a's pending")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                frozen.set()
                raise
            a.process.send_signal(signal.SIGCONT)
    frozen.set()
    a.kill()
    producer.join(30)
    wait_until(lambda: set(alice.ids("tick")) >= set(produced), 30, "every event")
    wait_until(lambda: all_acked(redis_client), 10, "XPENDING empty")
    assert '"bridge.claimed"' in b.output()
    assert sorted(unique_in_order(alice.ids("tick"))) == sorted(produced)


def _pending_of(redis_client, consumer: str) -> int:
    for c in redis_client.xinfo_consumers("events", "bridge"):
        if c["name"] == consumer:
            return c["pending"]
    return 0


def test_redis_restart_midrun_client_stays_connected_and_gets_everything(
    env, tmp_path, processes, clients
):
    server = RedisServer(tmp_path / "redis-restart", appendfsync="always").start()
    try:
        env = dict(env, REDIS_URL=server.url)
        web = Web(env, tmp_path, name="web-r")
        bridge = Bridge(env, tmp_path, name="bridge-r")
        processes.extend([web, bridge])
        start_together(web, bridge)
        alice = connect(clients, web, "alice")
        rc = server.client()
        before = produce(rc, 200)
        wait_until(lambda: set(alice.ids("tick")) >= set(before), 10, "events before restart")
        server.kill()  # SIGKILL: nothing graceful
        server = RedisServer(server.directory, port=server.port, appendfsync="always").start()
        rc = server.client()
        after = produce(rc, 200)
        wait_until(lambda: set(alice.ids("tick")) >= set(before + after), 30, "all events")
        assert alice.sio.connected  # never reconnected: reconnection is off in the client
        assert unique_in_order(alice.ids("tick")) == before + after
        assert bridge.alive() and web.alive()
    finally:
        server.stop()


def test_reconnecting_client_gets_exactly_its_missed_events(web, bridge, clients, redis_client):
    alice = connect(clients, web, "alice")
    first = produce(redis_client, 5)
    events = alice.wait_for(5, "tick")
    last_meta = events[-1][2]
    assert last_meta["entry"] == first[-1]
    alice.close()

    rooms = {0: None, 1: "user:alice", 2: "user:bob"}
    missed = produce(redis_client, 1_000, room_of=lambda i: rooms[i % 3])
    expected = [i for n, i in enumerate(missed) if n % 3 != 2]
    wait_until(lambda: all_acked(redis_client), 20, "bridge done")

    again = connect(clients, web, "alice", auth={"last_id": last_meta["id"],
                                                  "epoch": last_meta["epoch"]})  # fmt: skip
    [(_, info, _)] = again.wait_for(1, RECOVERY)
    assert info["recovered"] is True
    assert info["replayed"] == len(expected)
    assert again.ids("tick") == expected  # exactly: no duplicates, no gaps, in order
    assert all(meta.get("replayed") for _, _, meta in again.received("tick"))
    bodies = [b for _, b, _ in again.received("tick")]
    assert all(b % 3 != 2 for b in bodies)  # never bob's


def test_live_events_during_catch_up_keep_order(web, bridge, clients, redis_client):
    alice = connect(clients, web, "alice")
    produce(redis_client, 1)
    [(_, _, meta)] = alice.wait_for(1, "tick")
    alice.close()
    missed = produce(redis_client, 900)  # under the history size (1,000 per room)
    live: list[str] = []
    producer = threading.Thread(target=lambda: live.extend(produce(redis_client, 500, rate=500)))
    producer.start()
    again = connect(clients, web, "alice", auth={"last_id": meta["id"], "epoch": meta["epoch"]})
    producer.join(10)
    wait_until(lambda: set(again.ids("tick")) >= set(missed + live), 20, "every event")
    assert again.ids("tick") == missed + live  # one ordered sequence, nothing twice


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ({"last_id": "not-an-id", "epoch": "E"}, "malformed"),
        ({"last_id": "99999999999999-0", "epoch": "E"}, "future"),
        ({"last_id": "FIRST", "epoch": "wrong"}, "epoch"),
        ({"last_id": "FIRST"}, "epoch"),
        ({"last_id": "FIRST", "epoch": "E"}, "trimmed"),
    ],
)
def test_unrecoverable_positions_fail_closed(web, bridge, clients, redis_client, auth, reason):
    produce(redis_client, 50)
    wait_until(lambda: all_acked(redis_client), 10, "bridge done")
    epoch = redis_client.get("events:epoch")
    broadcast = keys.history("events", "/", None)
    first = redis_client.xrange(broadcast, count=1)[0][0]
    auth = {k: {"FIRST": first, "E": epoch}.get(v, v) for k, v in auth.items()}
    redis_client.xtrim(broadcast, maxlen=10, approximate=False)
    client = connect(clients, web, "alice", auth=auth)
    [(_, info, _)] = client.wait_for(1, RECOVERY)
    assert info["recovered"] is False
    assert reason in info["reason"]
    assert client.received("tick") == []  # no partial replay
    new = produce(redis_client, 1)
    client.wait_for(1, "tick")
    assert client.ids("tick") == new  # and live events flow


@pytest.mark.parametrize("form", ["last_id", "positions"])
def test_a_position_without_an_epoch_recovers_while_its_entry_is_there(
    web, bridge, clients, redis_client, form
):
    ids = produce(redis_client, 20)
    wait_until(lambda: all_acked(redis_client), 10, "bridge done")
    at = positions_of(redis_client)
    # The documented form, as a Socket.IO client written to it sends: no epoch at all.
    auth = {"last_id": at[9]} if form == "last_id" else {"positions": {"0": {"last_id": at[9]}}}
    client = connect(clients, web, "alice", auth=auth)
    [(_, info, _)] = client.wait_for(1, RECOVERY)
    assert (info["recovered"], info["replayed"]) == (True, 10)
    assert client.ids("tick") == ids[10:]
    assert info["positions"]["0"] == {"last_id": at[-1], "epoch": redis_client.get("events:epoch")}


def test_gap_longer_than_replay_limit_is_not_recovered(env, tmp_path, processes, bridge, clients,
                                                       redis_client):  # fmt: skip
    web = Web(dict(env, STREAMBRIDGE_REPLAY_LIMIT="100"), tmp_path, name="web-limit")
    processes.append(web)
    web.start()
    produce(redis_client, 150)
    wait_until(lambda: all_acked(redis_client), 10, "bridge done")
    auth = {"last_id": positions_of(redis_client)[0], "epoch": redis_client.get("events:epoch")}
    client = connect(clients, web, "alice", auth=auth)
    [(_, info, _)] = client.wait_for(1, RECOVERY)
    assert info == {**info, "recovered": False, "replayed": 0}
    assert "more than 100" in info["reason"]
    assert client.received("tick") == []


def test_pubsub_connection_killed_client_misses_nothing(web, bridge, clients, redis_client):
    alice = connect(clients, web, "alice")
    produced: list[str] = []
    producer = threading.Thread(
        target=lambda: produced.extend(produce(redis_client, 1_500, rate=500))
    )
    producer.start()
    for _ in range(3):
        wait_until(lambda: len(alice.ids("tick")) > len(produced) // 2 + 10, 10, "flowing")
        wait_until(lambda: redis_client.pubsub_numsub("flask-socketio")[0][1] >= 1, 10,
                   "web subscribed again")  # fmt: skip
        killed = redis_client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        wait_until(lambda: len(produced) > len(alice.ids("tick")) + 50 or not producer.is_alive(),
                   10, "more events")  # fmt: skip
    producer.join(20)
    wait_until(lambda: set(alice.ids("tick")) >= set(produced), 20, "every event")
    assert alice.sio.connected
    assert unique_in_order(alice.ids("tick")) == produced
    assert '"catchup.resync"' in web.output()


def test_poison_entries_go_dead_after_max_deliveries_and_requeue_brings_them_back(
    env, tmp_path, processes, web, clients, redis_client
):
    # A bridge whose Redis user may not PUBLISH: every delivery of every entry fails.
    redis_client.acl_setuser(
        "limited", enabled=True, passwords=["+limited-pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-publish"],
    )  # fmt: skip
    try:
        port = redis_client.connection_pool.connection_kwargs["port"]
        limited = dict(
            env,
            REDIS_URL=f"redis://limited:limited-pw@127.0.0.1:{port}/0",
            STREAMBRIDGE_MAX_DELIVERIES="2",
            STREAMBRIDGE_CLAIM_IDLE_MS="200",
        )
        bridge = Bridge(limited, tmp_path, name="bridge-limited")
        processes.append(bridge)
        bridge.start()
        alice = connect(clients, web, "alice")
        ids = produce(redis_client, 3)
        wait_until(lambda: dead_count(redis_client) == 3, 15, "3 dead letters")
        dead = redis_client.xrange("events:dead")
        assert [f["original_id"] for _, f in dead] == ids
        assert all("delivered 3 times" in f["reason"] for _, f in dead)
        # Acked in the round trip after the dead letters are written.
        wait_until(lambda: all_acked(redis_client), 10, "the dead-lettered entries acked")
        assert alice.received("tick") == []

        redis_client.acl_setuser("limited", commands=["+publish"])  # the fix
        out = cli(env, "dead", "requeue", "--all", check=True)
        assert "requeued 3" in out.stderr
        events = alice.wait_for(3, "tick", timeout=15)
        assert [b for _, b, _ in events] == [0, 1, 2]
        assert redis_client.xlen("events:dead") == 0
    finally:
        redis_client.acl_deluser("limited")


def test_sigterm_during_burst_exits_zero_with_nothing_pending(bridge, redis_client):
    from streambridge.publisher import Publisher
    from streambridge.settings import ProducerSettings

    publisher = Publisher(redis_client, ProducerSettings())
    publisher.publish_many({"channel": "tick", "body": i} for i in range(30_000))
    wait_until(lambda: _pending_of(redis_client, "bridge") > 0 or (all_acked(redis_client)
               and redis_client.xinfo_groups("events")[0]["last-delivered-id"] != "0-0"),
               10, "bridge busy")  # fmt: skip
    started = time.monotonic()
    assert bridge.terminate(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert _pending_of(redis_client, "bridge") == 0
    assert '"bridge.stopped"' in bridge.output()


def test_pending_entries_trimmed_away_are_counted_not_looped_on(env, tmp_path, processes, web,
                                                                clients, redis_client):  # fmt: skip
    # A crashed consumer "bridge" left 5 entries pending; then the stream was trimmed.
    ids = produce(redis_client, 5)
    redis_client.xgroup_create("events", "bridge", id="0")
    redis_client.xreadgroup("bridge", "bridge", {"events": ">"}, count=10)
    redis_client.xtrim("events", maxlen=2, approximate=False)
    alice = connect(clients, web, "alice")
    bridge = Bridge(env, tmp_path)
    processes.append(bridge)
    bridge.start()
    wait_until(lambda: all_acked(redis_client), 10, "pending list empty")
    assert [m["entry"] for _, _, m in alice.wait_for(2, "tick")] == ids[3:]
    assert '"bridge.pending_trimmed"' in bridge.output()
    assert '"count": 3' in bridge.output()
    assert not redis_client.exists("events:dead")
    new = produce(redis_client, 1)
    alice.wait_for(3, "tick")
    assert alice.ids("tick") == ids[3:] + new
