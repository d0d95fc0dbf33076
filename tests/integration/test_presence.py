"""Presence across web servers: real ``streambridge web`` processes sharing one Redis,
real python-socketio clients sending what ``streambridge.js`` sends.

carol is granted ``team:blue`` (present there from connect); alice may subscribe to
``team:*`` (present once subscribed); bob has neither. The web servers run with a short
presence ttl, so a killed server's users are gone in seconds.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.support import RECOVERY, Web, open_socket, report, start_together, start_web, wait_until

pytestmark = pytest.mark.integration

PRESENCE = "streambridge:presence"
ROOM = "team:blue"
TTL_S = 2.0
BOUND_S = TTL_S + TTL_S / 3  # the documented bound: ttl, plus a heartbeat to notice


@pytest.fixture
def servers(env, tmp_path, processes):
    settings = dict(env, STREAMBRIDGE_PRESENCE_TTL_S=str(TTL_S))
    pair = (Web(settings, tmp_path, name="web-a"), Web(settings, tmp_path, name="web-b"))
    processes.extend(pair)
    start_together(*pair)
    return pair


def connected(clients, web, user):
    client = open_socket(clients, web, web.login(user))
    client.wait_for(1, RECOVERY)
    return client


def subscribed(clients, web, user, room=ROOM):
    client = connected(clients, web, user)
    assert client.sio.call("streambridge:subscribe", {"room": room}, timeout=10)["ok"]
    return client


def watch(client, room=ROOM, **request):
    answer = client.sio.call(PRESENCE, {"room": room, **request}, timeout=10)
    if answer.get("ok") and "seq" in answer:
        client.presence_seq = answer["seq"]
    return answer


def changes(client, room=ROOM) -> list[tuple[str, str]]:
    """The changes after the client's read of the room (as streambridge.js applies
    them: one numbered before is already in what it read)."""
    after = getattr(client, "presence_seq", 0)
    return [
        (e["type"], e["user"])
        for _, e, _ in client.received(PRESENCE)
        if e["room"] == room and e["seq"] > after
    ]


def read(web, session, room=ROOM):
    return session.get(f"{web.url}/api/presence", params={"room": room}, timeout=5)


def test_join_and_leave_across_two_servers_and_a_user_leaves_with_its_last_tab(servers, clients):
    a, b = servers
    carol = connected(clients, a, "carol")  # granted: present from connect
    answer = watch(carol)
    assert answer["ok"] and answer["users"] == {"carol": 1}
    alice_1 = subscribed(clients, b, "alice")  # on the other server
    wait_until(lambda: changes(carol) == [("join", "alice")], 5, "alice's join")
    alice_2 = subscribed(clients, a, "alice")  # a second tab: already present
    session = a.login("alice")
    wait_until(lambda: read(a, session).json()["users"] == {"carol": 1, "alice": 2}, 5, "2 tabs")
    alice_1.close()
    wait_until(lambda: read(b, session).json()["users"] == {"carol": 1, "alice": 1}, 5, "1 tab")
    assert changes(carol) == [("join", "alice")]  # one tab closed: still present
    alice_2.close()
    wait_until(lambda: changes(carol) == [("join", "alice"), ("leave", "alice")], 5, "leave")
    assert read(b, session).json()["users"] == {"carol": 1}
    seqs = [e["seq"] for _, e, _ in carol.received(PRESENCE)]
    assert seqs == sorted(seqs) and len(seqs) == 2 and seqs[0] > answer["seq"]


def test_a_killed_web_servers_users_are_gone_within_the_bound(servers, clients):
    a, b = servers
    carol = connected(clients, a, "carol")
    assert watch(carol)["ok"]
    subscribed(clients, b, "alice")
    wait_until(lambda: changes(carol) == [("join", "alice")], 5, "alice's join")
    b.kill()  # SIGKILL: no leave is written
    killed = time.monotonic()
    wait_until(
        lambda: changes(carol) == [("join", "alice"), ("leave", "alice")],
        BOUND_S + 2,
        "the dead server's user to leave",
    )
    took = time.monotonic() - killed
    report(f"presence: a SIGKILLed web server's user left after {took:.2f} s (ttl {TTL_S} s)")
    assert took <= BOUND_S + 0.5
    assert read(a, a.login("carol")).json()["users"] == {"carol": 1}


def test_a_stopped_web_server_leaves_at_once(env, tmp_path, processes, clients):
    settings = {"STREAMBRIDGE_PRESENCE_TTL_S": "60"}  # the ttl cannot be what removes alice
    a = start_web(env, tmp_path, processes, "web-a", **settings)
    b = start_web(env, tmp_path, processes, "web-b", **settings)
    carol = connected(clients, a, "carol")
    assert watch(carol)["ok"]
    subscribed(clients, b, "alice")
    wait_until(lambda: changes(carol) == [("join", "alice")], 5, "alice's join")
    assert b.terminate() == 0
    wait_until(lambda: changes(carol)[-1:] == [("leave", "alice")], 5, "alice to leave")


def test_only_watchers_are_told_and_only_of_their_rooms(servers, clients):
    a, b = servers
    carol = connected(clients, a, "carol")  # in team:blue, not watching
    watcher = subscribed(clients, b, "alice")
    assert watch(watcher)["ok"]
    assert subscribed(clients, a, "alice", "team:red")  # another room
    other = subscribed(clients, b, "alice", "team:red")
    bob_session = a.login("bob")
    bob = open_socket(clients, a, bob_session)
    bob.wait_for(1, RECOVERY)
    assert watch(bob) == {"ok": False, "room": ROOM, "reason": "not subscribed to this room"}
    carol.close()
    wait_until(lambda: changes(watcher) == [("leave", "carol")], 5, "carol's leave")
    assert carol.received(PRESENCE) == [] and other.received(PRESENCE) == []
    assert watch(watcher, watch=False) == {"ok": True, "room": ROOM, "watching": False}
    still = subscribed(clients, b, "alice")  # watching on the same server
    assert watch(still)["ok"]
    connected(clients, a, "carol")
    assert read(a, bob_session, ROOM).status_code == 403
    wait_until(lambda: changes(still) == [("join", "carol")], 5, "carol's join, on web-b")
    watch(watcher, watch=False)  # a round trip: whatever was sent to it before has come
    assert changes(watcher) == [("leave", "carol")]  # it stopped watching


def test_the_presence_api_refuses_what_subscribing_refuses(servers):
    a, _ = servers
    bob, alice, carol = a.login("bob"), a.login("alice"), a.login("carol")
    assert read(a, bob).status_code == 403
    assert read(a, alice, "user:carol").status_code == 403  # another user's room
    assert read(a, carol).json() == {"status": True, "room": ROOM, "users": {}, "seq": 0}
    assert read(a, alice, "team:anything").status_code == 200  # alice's pattern
    assert read(a, alice, "x" * 300).status_code == 400
    assert a.login("alice").get(f"{a.url}/api/presence", timeout=5).status_code == 400
    assert requests.get(f"{a.url}/api/presence?room=team:blue", timeout=5).status_code == 401


def test_an_unsubscribed_room_is_left_and_redis_losing_the_room_is_repaired(
    servers, clients, redis_client
):
    a, b = servers
    carol = connected(clients, a, "carol")
    assert watch(carol)["ok"]
    alice = subscribed(clients, b, "alice")
    wait_until(lambda: changes(carol) == [("join", "alice")], 5, "alice's join")
    assert alice.sio.call("streambridge:unsubscribe", {"room": ROOM}, timeout=10)["ok"]
    wait_until(lambda: changes(carol)[-1:] == [("leave", "alice")], 5, "alice's leave")
    # Redis loses the room (a restart without persistence): the heartbeats put back
    # who is connected, and the watchers are told.
    for key in redis_client.keys("*presence*"):
        redis_client.delete(key)
    redis_client.script_flush()
    wait_until(lambda: changes(carol)[-1:] == [("join", "carol")], 5, "carol put back")
    session = a.login("carol")
    assert read(a, session).json()["users"] == {"carol": 1}
