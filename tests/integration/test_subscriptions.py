"""Rooms on request: a logged-in client asks for a room, the users file's patterns (the
standalone app's authorization hook) decide.

Real ``streambridge web`` and ``bridge`` processes, real python-socketio clients that
send the same requests as ``streambridge.js``. alice may subscribe to ``team:*`` and
``order:1*``; bob and carol to nothing on request.
"""

from __future__ import annotations

import pytest
from streambridge.webapp.app.users import UserStore

from streambridge.ids import StreamId
from tests.support import (
    PASSWORDS,
    RECOVERY,
    PacedProducer,
    all_published,
    open_socket,
    start_web,
    wait_until,
)

pytestmark = pytest.mark.integration

SUBSCRIBE = "streambridge:subscribe"
UNSUBSCRIBE = "streambridge:unsubscribe"


def subscribe(client, room, **request):
    return client.sio.call(SUBSCRIBE, {"room": room, **request}, timeout=10)


def publish(redis_client, room, body, channel="message"):
    return redis_client.xadd("events", {"channel": channel, "body": body, "room": room})


def connected(clients, web, user, **kwargs):
    client = open_socket(clients, web, web.login(user), **kwargs)
    client.wait_for(1, RECOVERY)
    return client


def test_an_allowed_room_is_joined_and_a_refused_one_never_delivers(
    web, bridge, clients, redis_client
):
    alice = connected(clients, web, "alice")
    bob = connected(clients, web, "bob")
    assert subscribe(alice, "team:red") == {
        "ok": True,
        "room": "team:red",
        "recovered": True,
        "replayed": 0,
    }
    refused = subscribe(bob, "team:red")
    assert refused == {"ok": False, "room": "team:red", "reason": "not allowed"}
    assert subscribe(alice, "secret:x")["reason"] == "not allowed"
    assert subscribe(alice, "user:bob")["reason"] == "another user's room"
    publish(redis_client, "team:red", '"red 1"')
    publish(redis_client, "secret:x", '"secret"')
    publish(redis_client, "user:bob", '"for bob"')
    publish(redis_client, "team:red", '"red 2"')
    alice.wait_for(2, "message")
    bob.wait_for(1, "message")
    wait_until(lambda: all_published(redis_client), 10, "acks")
    assert alice.bodies() == ["red 1", "red 2"]
    assert bob.bodies() == ["for bob"]
    assert alice.sio.connected and bob.sio.connected  # a refusal is an answer, not a close


def test_subscribing_with_a_position_replays_exactly_the_rooms_missed_events_in_order(
    web, bridge, clients, redis_client
):
    alice = connected(clients, web, "alice")
    assert subscribe(alice, "team:red")["ok"]
    for n in range(3):
        publish(redis_client, "team:red", f'"seen {n}"')
    alice.wait_for(3, "message")
    at = alice.positions()
    alice.close()
    for n in range(5):
        publish(redis_client, "team:red", f'"missed {n}"')
        publish(redis_client, "team:blue", f'"other room {n}"')  # alice may not see these
        redis_client.xadd("events", {"channel": "message", "body": f'"broadcast {n}"'})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    again = connected(clients, web, "alice", auth={"positions": at})
    again.wait_for(5, "message")  # the broadcasts, from the connect catch-up
    answer = subscribe(again, "team:red", positions=at)
    assert answer == {"ok": True, "room": "team:red", "recovered": True, "replayed": 5}
    again.wait_for(10, "message")
    publish(redis_client, "team:red", '"live"')
    again.wait_for(11, "message")
    got = again.bodies()
    assert [b for b in got if b.startswith("missed") or b == "live"] == [
        *(f"missed {n}" for n in range(5)),
        "live",
    ]
    assert not [b for b in got if b.startswith("other room")]
    replayed = [meta for _, body, meta in again.received("message") if body.startswith("missed")]
    assert all(meta["replayed"] for meta in replayed)


def test_no_event_is_lost_or_doubled_while_a_room_is_replayed_under_live_traffic(
    web, bridge, clients, redis_client
):
    alice = connected(clients, web, "alice")
    assert subscribe(alice, "team:red")["ok"]
    publish(redis_client, "team:red", '"first"')
    alice.wait_for(1, "message")
    at = alice.positions()
    alice.close()
    # Back (logged in, connected: slow steps) before the room's events go on; the room is
    # asked for while they do.
    again = connected(clients, web, "alice", auth={"positions": at})
    # Fast enough that live events arrive while the replay is sent; fewer missed than a
    # history keeps (1,000).
    total = 2000
    producer = PacedProducer(redis_client, "message", total, rate=1000.0, room="team:red")
    try:
        producer.start()
        wait_until(lambda: len(producer.ids) >= 500, 10, "events while alice is away")
        answer = subscribe(again, "team:red", positions=at)
        assert answer["ok"] and answer["recovered"], answer
        assert answer["replayed"] >= 500
        assert len(producer.ids) < total, "the producer must still be going during the replay"
        producer.join()
    finally:
        producer.stopping.set()
    wait_until(lambda: all_published(redis_client), 10, "acks")
    again.wait_for(total, "message")
    got = [(body, meta["id"]) for _, body, meta in again.received("message")]
    assert [body for body, _ in got] == list(range(total))  # each once, in order
    ids = [StreamId.parse(i) for _, i in got]
    assert ids == sorted(ids)


def test_a_room_revoked_between_two_connections_is_not_joined_again(
    web, bridge, clients, redis_client, users_file
):
    alice = connected(clients, web, "alice")
    assert subscribe(alice, "team:red")["ok"]
    alice.close()
    UserStore(users_file).add("alice", PASSWORDS["alice"], subscribe=["order:1*"])
    again = connected(clients, web, "alice")
    assert subscribe(again, "team:red") == {
        "ok": False,
        "room": "team:red",
        "reason": "not allowed",
    }
    assert subscribe(again, "order:17")["ok"]
    publish(redis_client, "team:red", '"revoked"')
    publish(redis_client, "order:17", '"order"')
    again.wait_for(1, "message")
    wait_until(lambda: all_published(redis_client), 10, "acks")
    assert again.bodies() == ["order"]


def test_unsubscribing_stops_the_rooms_events(web, bridge, clients, redis_client):
    alice = connected(clients, web, "alice")
    assert subscribe(alice, "team:red")["ok"]
    publish(redis_client, "team:red", '"before"')
    alice.wait_for(1, "message")
    assert alice.sio.call(UNSUBSCRIBE, {"room": "team:red"}, timeout=10) == {
        "ok": True,
        "room": "team:red",
    }
    again = alice.sio.call(UNSUBSCRIBE, {"room": "team:red"}, timeout=10)
    assert again == {"ok": False, "room": "team:red", "reason": "not subscribed on request"}
    publish(redis_client, "team:red", '"after"')
    redis_client.xadd("events", {"channel": "message", "body": '"broadcast"'})
    alice.wait_for(2, "message")
    assert alice.bodies() == ["before", "broadcast"]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({}, "room must be a string"),
        ({"room": ""}, "room must be 1-256 characters"),
        ({"room": "x" * 257}, "room must be 1-256 characters"),
        ({"room": 7}, "room must be a string"),
        ("team:red", "the request must be an object"),
    ],
)
def test_malformed_requests_are_refused_cleanly(web, clients, request_, reason):
    alice = connected(clients, web, "alice")
    answer = alice.sio.call(SUBSCRIBE, request_, timeout=10)
    assert answer == {"ok": False, "room": None, "reason": reason}
    assert subscribe(alice, "team:red")["ok"]  # still connected and served


def test_limits_refuse_cleanly(env, tmp_path, processes, clients):
    web = start_web(
        env,
        tmp_path,
        processes,
        "web-limits",
        STREAMBRIDGE_MAX_SUBSCRIPTIONS="2",
        STREAMBRIDGE_SUBSCRIBE_BURST="4",
        STREAMBRIDGE_SUBSCRIBE_RATE="0.01",
    )
    alice = connected(clients, web, "alice")
    assert subscribe(alice, "team:a")["ok"]
    assert subscribe(alice, "team:b")["ok"]
    assert subscribe(alice, "team:c")["reason"] == "too many rooms (limit 2)"
    assert subscribe(alice, "team:a")["ok"]  # again (a new position): not one more room
    slow_down = subscribe(alice, "team:d")
    assert slow_down["reason"] == "too many requests; slow down"
    assert slow_down["retry"] is True  # a passing refusal: streambridge.js asks again
    assert alice.sio.connected


def test_another_connections_own_room_is_refused(web, clients):
    alice = connected(clients, web, "alice")
    bob = connected(clients, web, "bob")
    answer = subscribe(alice, bob.sio.get_sid())  # python-socketio's room for that socket
    assert answer["ok"] is False
    assert answer["reason"] == "another connection's room"
