"""The presence registry (``streambridge.presence``) against a real redis-server: two
web servers' connections in one room, two tabs, a server that dies without a word."""

from __future__ import annotations

import pytest

from streambridge.presence import Presence
from tests.support import wait_until

pytestmark = pytest.mark.integration

ROOM = ("/", "team:red")


@pytest.fixture
def servers(redis_client):
    """Two web servers' views of presence (one Redis); a short ttl for the crash cases."""
    return Presence(redis_client, "events", ttl_s=0.5), Presence(redis_client, "events", 0.5)


def test_a_user_is_present_while_any_of_its_connections_is(servers):
    a, b = servers
    assert a.join(*ROOM, "alice", "a-1").changed  # first: joined
    assert not b.join(*ROOM, "alice", "b-1").changed  # a second tab, another server
    assert b.join(*ROOM, "bob", "b-2").changed
    assert a.read(*ROOM) == ({"alice": 2, "bob": 1}, [])
    assert not a.leave(*ROOM, "alice", "a-1").changed  # one tab left: still present
    assert b.read(*ROOM)[0] == {"alice": 1, "bob": 1}
    assert b.leave(*ROOM, "alice", "b-1").changed  # the last one: left
    assert not b.leave(*ROOM, "alice", "b-1").changed  # twice is once
    assert a.read(*ROOM) == ({"bob": 1}, [])


def test_names_of_any_shape_are_kept_apart(servers):
    a, _ = servers
    for user in ("a:b", "1:x", "é\n", "a"):
        assert a.join(*ROOM, user, "c1").changed
    assert a.read(*ROOM)[0] == {"a:b": 1, "1:x": 1, "é\n": 1, "a": 1}


def test_a_dead_servers_connections_go_within_the_ttl_and_are_announced_once(servers):
    live, dead = servers
    live.join(*ROOM, "alice", "l-1")
    dead.join(*ROOM, "bob", "d-1")
    dead.join(*ROOM, "alice", "d-2")  # alice also has a tab on the live server
    # The dead server sends no more heartbeats; the live one keeps its own.
    gone: list[str] = []

    def bob_gone() -> bool:
        back, left = live.heartbeat(*ROOM, [("alice", "l-1")])
        assert back == []
        gone.extend(left)
        return "bob" in gone

    wait_until(bob_gone, 3, "bob's connection to expire")
    assert gone == ["bob"]  # alice is still present through her other tab
    assert live.read(*ROOM) == ({"alice": 1}, [])  # announced once, by whoever reaped


def test_a_paused_servers_connection_comes_back_with_its_heartbeat(redis_client):
    slow = Presence(redis_client, "events", ttl_s=0.2)
    other = Presence(redis_client, "events", ttl_s=0.2)
    slow.join(*ROOM, "carol", "s-1")
    wait_until(lambda: other.read(*ROOM)[1] == ["carol"], 3, "carol to expire")
    back, gone = slow.heartbeat(*ROOM, [("carol", "s-1")])
    assert (back, gone) == (["carol"], [])
    assert other.read(*ROOM)[0] == {"carol": 1}


def test_a_room_nobody_refreshes_leaves_no_keys(redis_client):
    registry = Presence(redis_client, "events", ttl_s=0.1)
    registry.join(*ROOM, "dave", "c1")
    keys = registry.keys(*ROOM)
    assert all(redis_client.exists(k) for k in keys)
    wait_until(lambda: not any(redis_client.exists(k) for k in keys), 3, "the keys to expire")


def test_rooms_and_namespaces_are_apart(servers):
    a, _ = servers
    a.join("/", "team:red", "alice", "c1")
    a.join("/x", "team:red", "bob", "c2")
    a.join("/", "team:blue", "carol", "c3")
    assert a.read("/", "team:red")[0] == {"alice": 1}
    assert a.read("/x", "team:red")[0] == {"bob": 1}
    assert a.read("/", "team:blue")[0] == {"carol": 1}
