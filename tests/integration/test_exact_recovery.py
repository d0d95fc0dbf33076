"""Positions mean "I have everything up to here", and catch-up costs what the user may
see, not what the stream holds (real redis-server, bridge and web processes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from werkzeug.security import generate_password_hash

from streambridge import keys
from streambridge.contract import Event
from streambridge.ids import StreamId
from streambridge.publisher import Publisher
from streambridge.settings import ProducerSettings
from tests.support import (
    RECOVERY,
    Bridge,
    Client,
    Web,
    all_published,
    report,
    start_together,
    terminate_bridge_now,
    wait_until,
)

pytestmark = pytest.mark.integration


def connect(clients, web, user, auth=None, session=None) -> Client:
    client = Client().connect(web, session or web.login(user), auth=auth)
    clients.append(client)
    return client


def recovery(client: Client, timeout: float = 15.0) -> dict:
    [(_, info, _)] = client.wait_for(1, RECOVERY, timeout=timeout)
    return info


def all_acked(redis_client) -> bool:
    return all_published(redis_client)


def publisher(redis_server) -> Publisher:
    return Publisher(settings=ProducerSettings(redis_url=redis_server.url))


# -- a late publish never falls below a position -------------------------------------


def restart(bridge: Bridge) -> None:
    mark = len(bridge.output())
    bridge.start(wait=False)
    bridge.wait_log('"bridge.all_ready"', after=mark)


def read_and_die(redis_client) -> None:
    """What a bridge that read entries and was killed before publishing leaves behind:
    the entries pending on its consumer name, which nobody serves any more."""
    redis_client.xreadgroup("bridge", "killed-bridge", {"events": ">"})


@contextmanager
def unclaimable(redis_client, entry: str) -> Iterator[None]:
    """Keeps ``entry`` (pending on the dead consumer) looking just read until the block
    ends, so the test's steps, not the machine's speed, decide when a live bridge may
    claim it (after the claim idle time, 2 s here). JUSTID leaves its delivery count."""
    stop = threading.Event()

    def refresh() -> None:
        while True:
            redis_client.xclaim(
                "events", "bridge", "killed-bridge", 0, [entry], idle=0, justid=True
            )
            if stop.wait(0.2):
                return

    keeper = threading.Thread(target=refresh, daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def test_an_event_published_late_is_replayed_to_a_client_already_past_it(
    web, bridge, clients, redis_client
):
    """Bridge A reads W and dies; a live bridge publishes the newer M; alice gets M and
    goes away; W is claimed and published; alice reconnects with M's position."""
    alice = connect(clients, web, "alice")
    recovery(alice)
    # So that W is read by the bridge that dies, not this one.
    assert terminate_bridge_now(bridge, redis_client) == 0
    w = redis_client.xadd("events", {"channel": "m", "body": '"W"', "room": "user:alice"})
    read_and_die(redis_client)
    with unclaimable(redis_client, w):
        restart(bridge)
        m = redis_client.xadd("events", {"channel": "m", "body": '"M"', "room": "user:alice"})
        [(_, body, meta)] = alice.wait_for(1, "m")
    assert (body, meta["entry"]) == ("M", m)
    at = alice.positions()
    alice.close()
    # The live bridge claims W after the claim idle time (2 s here) and publishes it.
    wait_until(lambda: all_acked(redis_client), 15, "W claimed and published")
    again = connect(clients, web, "alice", auth={"positions": at})
    info = recovery(again)
    assert (info["recovered"], info["replayed"]) == (True, 1)
    [(_, body, meta)] = again.received("m")
    assert (body, meta["entry"], meta["replayed"]) == ("W", w, True)
    # Its position comes after M's: published later, it is later in every history.
    assert StreamId.parse(meta["id"]) > StreamId.parse(at["0"]["last_id"])


def test_a_client_back_before_the_claim_gets_the_late_event_live(
    web, bridge, clients, redis_client
):
    alice = connect(clients, web, "alice")
    recovery(alice)
    assert terminate_bridge_now(bridge, redis_client) == 0
    w = redis_client.xadd("events", {"channel": "m", "body": '"W"', "room": "user:alice"})
    read_and_die(redis_client)
    with unclaimable(redis_client, w):
        restart(bridge)
        redis_client.xadd("events", {"channel": "m", "body": '"M"', "room": "user:alice"})
        alice.wait_for(1, "m")
        at = alice.positions()
        alice.close()
        again = connect(clients, web, "alice", auth={"positions": at})
        info = recovery(again)
        assert (info["recovered"], info["replayed"]) == (True, 0)
        assert redis_client.xpending("events", "bridge")["pending"] == 1  # W: not claimed yet
    [(_, body, meta)] = again.wait_for(1, "m", timeout=15)  # claimed, published: live
    assert (body, meta["entry"]) == ("W", w)
    assert "replayed" not in meta


# -- retention ---------------------------------------------------------------------


def test_a_quiet_room_expires_and_a_position_older_than_its_ttl_is_refused(
    env, tmp_path, processes, clients, redis_client
):
    short = dict(env, STREAMBRIDGE_HISTORY_TTL_S="2")
    web = Web(short, tmp_path, name="web-ttl")
    bridge = Bridge(short, tmp_path, name="bridge-ttl")
    processes.extend([web, bridge])
    start_together(web, bridge)
    alice = connect(clients, web, "alice")
    recovery(alice)
    redis_client.xadd("events", {"channel": "m", "body": '"one"', "room": "user:alice"})
    alice.wait_for(1, "m")
    room = keys.history("events", "/", "user:alice")
    assert redis_client.exists(room)
    at = alice.positions()
    alice.close()
    # No new event for longer than the TTL: the room's history leaves no key behind.
    wait_until(lambda: not redis_client.exists(room), 10, "the room's history expired")
    assert redis_client.keys("*history:*") == []
    # Older than the TTL, the position cannot be proved complete: refused, with a reason.
    wait_until(lambda: time.time() * 1000 - int(at["0"]["last_id"].split("-")[0]) > 2500, 5, "")
    again = connect(clients, web, "alice", auth={"positions": at})
    info = recovery(again)
    assert info["recovered"] is False and "expired" in info["reason"]
    assert again.received("m") == []
    redis_client.xadd("events", {"channel": "m", "body": '"two"', "room": "user:alice"})
    [(_, body, _)] = again.wait_for(1, "m")
    assert body == "two"  # and live events flow


def test_a_room_trimmed_past_a_position_is_refused_without_a_partial_replay(
    env, tmp_path, processes, clients, redis_client
):
    small = dict(env, STREAMBRIDGE_HISTORY_SIZE="10")
    web = Web(small, tmp_path, name="web-small")
    bridge = Bridge(small, tmp_path, name="bridge-small")
    processes.extend([web, bridge])
    start_together(web, bridge)
    alice = connect(clients, web, "alice")
    recovery(alice)
    redis_client.xadd("events", {"channel": "m", "body": "0", "room": "user:alice"})
    alice.wait_for(1, "m")
    at = alice.positions()
    alice.close()
    for i in range(1, 400):  # far more than the room keeps (trimming is approximate)
        redis_client.xadd("events", {"channel": "m", "body": str(i), "room": "user:alice"})
    wait_until(lambda: all_acked(redis_client), 15, "bridge done")
    assert redis_client.xlen(keys.history("events", "/", "user:alice")) < 399
    again = connect(clients, web, "alice", auth={"positions": at})
    info = recovery(again)
    assert info["recovered"] is False and "trimmed" in info["reason"]
    assert again.received("m") == []


# -- cost follows the user's rooms ------------------------------------------------------


def test_alice_recovers_her_events_among_40000_for_400_others(
    web, bridge, clients, redis_client, redis_server
):
    alice = connect(clients, web, "alice")
    recovery(alice)
    redis_client.xadd("events", {"channel": "m", "body": '"before"', "room": "user:alice"})
    alice.wait_for(1, "m")
    at = alice.positions()
    alice.close()
    pub = publisher(redis_server)
    mine = []
    for batch in range(40):
        events = [
            Event.build("m", {"n": i}, room=f"user:other{i % 400}")
            for i in range(batch * 1000, (batch + 1) * 1000)
        ]
        pub.publish_events(events)
        if batch % 8 == 0:
            mine += pub.publish_events([Event.build("m", {"mine": batch}, room="user:alice")])
    wait_until(lambda: all_acked(redis_client), 60, "bridge done")
    started = time.perf_counter()
    again = connect(clients, web, "alice", auth={"positions": at})
    info = recovery(again)
    took = time.perf_counter() - started
    assert (info["recovered"], info["replayed"]) == (True, 5)
    assert again.ids("m") == mine
    report(
        f"catch-up: alice offline while 40,000 events went to 400 other users and 5 to her: "
        f"recovered, 5 replayed, connect to recovery notice {took * 1000:.0f} ms"
    )


STORM_USERS = 100
STORM_TABS = 2  # two clients (tabs) per user: 200 clients


@pytest.fixture
def many_users(tmp_path):
    """A users file of STORM_USERS users (with a cheap hash: 100 scrypt hashes would
    take 20 s, and the hash's cost is not what this test is about)."""
    path = tmp_path / "many-users.json"
    cheap = generate_password_hash("pw", method="pbkdf2:sha256:1000")
    path.write_text(json.dumps({f"u{i}": cheap for i in range(STORM_USERS)}))
    return path


def test_a_reconnect_storm_after_a_web_restart_recovers_every_client_exactly(
    env, tmp_path, processes, bridge, redis_client, redis_server, many_users
):
    """200 clients of 100 users are connected; the web server is stopped (SIGTERM);
    meanwhile 20,000 events go to 400 other users and 2 to each of the 100; the web
    server comes back and all 200 reconnect at once with their positions."""
    storm_env = dict(
        env,
        STREAMBRIDGE_USERS_FILE=str(many_users),
        # Every client here comes from 127.0.0.1: lift the per-address caps.
        STREAMBRIDGE_MAX_CONNECTIONS_PER_ADDRESS="1000",
        STREAMBRIDGE_MAX_UNFINISHED_PER_ADDRESS="1000",
    )
    web = Web(storm_env, tmp_path, name="web-storm")
    processes.append(web)
    web.start()
    users = [f"u{i}" for i in range(STORM_USERS)]
    sessions = {u: web.login(u, "pw") for u in users}
    tabs: list[tuple[str, Client]] = []
    try:
        for user in users:
            for _ in range(STORM_TABS):
                tabs.append((user, Client().connect(web, sessions[user])))
        for _, tab in tabs:
            recovery(tab)
        pub = publisher(redis_server)
        pub.publish_events([Event.build("m", {"first": u}, room=f"user:{u}") for u in users])
        for _, tab in tabs:
            tab.wait_for(1, "m")
        at = {id(tab): tab.positions() for _, tab in tabs}
        assert web.terminate() == 0
        for _, tab in tabs:
            wait_until(lambda tab=tab: not tab.sio.connected, 10, "clients see the server go")
            tab.close()
        missed: dict[str, list[str]] = {u: [] for u in users}
        for batch in range(20):
            others = [
                Event.build("m", {"n": i}, room=f"user:other{i % 400}")
                for i in range(batch * 1000, (batch + 1) * 1000)
            ]
            pub.publish_events(others)
            if batch in (5, 15):
                mine = [Event.build("m", {"mine": batch}, room=f"user:{u}") for u in users]
                for user, entry in zip(users, pub.publish_events(mine), strict=True):
                    missed[user].append(entry)
        wait_until(lambda: all_acked(redis_client), 60, "bridge done")
        web = Web(storm_env, tmp_path, name="web-storm-restarted", port=web.port)
        processes.append(web)
        before = redis_client.info("commandstats")
        web.start()
        answered = time.perf_counter()
        again = [Client() for _ in tabs]
        threads = [
            threading.Thread(
                target=client.connect,
                args=(web, sessions[user]),
                kwargs={"auth": {"positions": at[id(tab)]}},
            )
            for client, (user, tab) in zip(again, tabs, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        infos = [recovery(client, timeout=30) for client in again]
        took = time.perf_counter() - answered
        after = redis_client.info("commandstats")
        for client, (user, _), info in zip(again, tabs, infos, strict=True):
            assert (info["recovered"], info["replayed"]) == (True, 2), info
            assert client.ids("m") == missed[user]
        calls = sum(v["calls"] for v in after.values()) - sum(v["calls"] for v in before.values())
        report(
            f"storm: {len(again)} clients of {STORM_USERS} users reconnected at once after a web "
            f"restart, each with 2 missed among 20,200: all recovered exactly in {took:.2f} s "
            f"from the server answering; {calls / len(again):.1f} Redis commands per reconnect "
            f"(login checks included)"
        )
    finally:
        for _, tab in tabs:
            tab.close()
        for client in locals().get("again", []):
            client.close()


def test_a_sigkilled_web_server_loses_nobody_who_reconnects_elsewhere(
    env, tmp_path, processes, bridge, clients, redis_client, redis_server
):
    """Two web servers; alice on the one that is SIGKILLed while events flow. She
    reconnects to the other with her position and gets exactly what she missed."""
    one = Web(env, tmp_path, name="web-one")
    two = Web(env, tmp_path, name="web-two")
    processes.extend([one, two])
    start_together(one, two)
    session = one.login("alice")
    alice = connect(clients, one, "alice", session=session)
    recovery(alice)
    pub = publisher(redis_server)
    sent = pub.publish_events([Event.build("m", i, room="user:alice") for i in range(50)])
    alice.wait_for(50, "m")
    one.kill()  # SIGKILL
    wait_until(lambda: not alice.sio.connected, 10, "alice sees the server go")
    at = alice.positions()
    sent += pub.publish_events([Event.build("m", i, room="user:alice") for i in range(50, 80)])
    wait_until(lambda: all_acked(redis_client), 15, "bridge done")
    again = connect(clients, two, "alice", auth={"positions": at}, session=session)
    info = recovery(again)
    assert (info["recovered"], info["replayed"]) == (True, 30)
    assert again.ids("m") == sent[50:]
