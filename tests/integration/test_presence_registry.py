"""The presence registry (``streambridge.presence``) against a real redis-server: two
web servers' connections in one room, two tabs, a server that dies without a word, and
the numbering of changes that lets a reader ignore what came before its read."""

from __future__ import annotations

import pytest

from streambridge.presence import JOINED, LEFT, Presence, changes, snapshot
from tests.support import wait_until

pytestmark = pytest.mark.integration

ROOM = ("/", "team:red")


def kinds(changes) -> list[tuple[str, str]]:
    return [(c.kind, c.user) for c in changes]


@pytest.fixture
def servers(redis_client):
    """Two web servers' views of presence (one Redis); a short ttl for the crash cases."""
    return Presence(redis_client, "events", ttl_s=0.5), Presence(redis_client, "events", 0.5)


def test_a_user_is_present_while_any_of_its_connections_is(servers):
    a, b = servers
    assert kinds(a.join(*ROOM, "alice", "a-1")) == [(JOINED, "alice")]  # first: joined
    assert b.join(*ROOM, "alice", "b-1") == []  # a second tab, another server
    assert kinds(b.join(*ROOM, "bob", "b-2")) == [(JOINED, "bob")]
    room, gone = a.read(*ROOM)
    assert (room.users, gone) == ({"alice": 2, "bob": 1}, [])
    assert a.leave(*ROOM, "alice", "a-1") == []  # one tab left: still present
    assert b.read(*ROOM)[0].users == {"alice": 1, "bob": 1}
    assert kinds(b.leave(*ROOM, "alice", "b-1")) == [(LEFT, "alice")]  # the last one
    assert b.leave(*ROOM, "alice", "b-1") == []  # twice is once
    assert a.read(*ROOM)[0].users == {"bob": 1}


def test_changes_are_numbered_in_order_and_a_read_gives_the_last_number(servers):
    a, b = servers
    seqs = [c.seq for c in a.join(*ROOM, "alice", "a-1") + b.join(*ROOM, "bob", "b-1")]
    room, _ = a.read(*ROOM)
    assert room.seq == seqs[-1]
    seqs += [c.seq for c in a.leave(*ROOM, "alice", "a-1") + a.join(*ROOM, "alice", "a-2")]
    assert seqs == sorted(set(seqs)) and len(seqs) == 4
    assert a.read(*ROOM)[0].seq == seqs[-1] > room.seq


def test_numbers_keep_growing_after_redis_loses_the_room(servers, redis_client):
    a, _ = servers
    before = a.join(*ROOM, "alice", "a-1")[0].seq
    redis_client.delete(*a.keys(*ROOM))
    # The server's heartbeat puts its connection back: announced with a later number.
    back = a.heartbeat(*ROOM, [("alice", "a-1")])
    assert kinds(back) == [(JOINED, "alice")] and back[0].seq > before


def test_names_of_any_shape_are_kept_apart(servers):
    a, _ = servers
    for user in ("a:b", "1:x", "é\n", "a"):
        assert kinds(a.join(*ROOM, user, "c1")) == [(JOINED, user)]
    assert a.read(*ROOM)[0].users == {"a:b": 1, "1:x": 1, "é\n": 1, "a": 1}
    with pytest.raises(ValueError):
        a.join(*ROOM, "", "c1")  # the empty name holds the room's number


def test_a_dead_servers_connections_go_within_the_ttl_and_are_announced_once(servers):
    live, dead = servers
    live.join(*ROOM, "alice", "l-1")
    dead.join(*ROOM, "bob", "d-1")
    dead.join(*ROOM, "alice", "d-2")  # alice also has a tab on the live server
    # The dead server sends no more heartbeats; the live one keeps its own.
    seen = []

    def bob_gone() -> bool:
        seen.extend(live.heartbeat(*ROOM, [("alice", "l-1")]))
        return any(c.user == "bob" for c in seen)

    wait_until(bob_gone, 3, "bob's connection to expire")
    assert kinds(seen) == [(LEFT, "bob")]  # alice is still present through her other tab
    room, gone = live.read(*ROOM)
    assert (room.users, gone) == ({"alice": 1}, [])  # announced once, by whoever reaped
    assert room.seq == seen[0].seq


def test_a_paused_servers_connection_comes_back_with_its_heartbeat(redis_client):
    slow = Presence(redis_client, "events", ttl_s=0.2)
    other = Presence(redis_client, "events", ttl_s=0.2)
    slow.join(*ROOM, "carol", "s-1")
    wait_until(lambda: kinds(other.read(*ROOM)[1]) == [(LEFT, "carol")], 3, "carol to expire")
    assert kinds(slow.heartbeat(*ROOM, [("carol", "s-1")])) == [(JOINED, "carol")]
    assert other.read(*ROOM)[0].users == {"carol": 1}


def test_a_room_nobody_refreshes_leaves_no_keys(redis_client):
    registry = Presence(redis_client, "events", ttl_s=0.1)
    registry.join(*ROOM, "dave", "c1")
    keys = registry.keys(*ROOM)
    assert all(redis_client.exists(k) for k in keys)
    wait_until(lambda: not any(redis_client.exists(k) for k in keys), 3, "the keys to expire")


def test_pipelined_commands_give_the_same_answers(servers, redis_client):
    a, _ = servers
    pipe = redis_client.pipeline(transaction=False)
    pipe.execute_command(*a.join_command(*ROOM, "erin", "p-1"))
    pipe.execute_command(*a.read_command(*ROOM))
    joined, read = pipe.execute()
    assert kinds(changes(joined)) == [(JOINED, "erin")]
    assert snapshot(read)[0].users == {"erin": 1}


@pytest.mark.parametrize("operation", ["join", "leave", "heartbeat", "read"])
def test_a_redis_that_lost_the_script_is_given_it_again(servers, redis_client, operation):
    a, _ = servers
    a.join(*ROOM, "erin", "p-1")
    command = {
        "join": lambda: a.join_command(*ROOM, "frank", "p-2"),
        "leave": lambda: a.leave_command(*ROOM, "erin", "p-1"),
        "heartbeat": lambda: a.heartbeat_command(*ROOM, [("erin", "p-1")]),
        "read": lambda: a.read_command(*ROOM),
    }[operation]
    command()  # its script loaded
    redis_client.script_flush()  # Redis restarted, failed over
    pipe = redis_client.pipeline(transaction=False)
    pipe.execute_command(*command())
    (lost,) = pipe.execute(raise_on_error=False)
    assert a.unloaded(lost)
    pipe = redis_client.pipeline(transaction=False)
    pipe.execute_command(*command())  # loaded again, as the web server's writer does
    (reply,) = pipe.execute(raise_on_error=False)
    assert not isinstance(reply, Exception), reply


@pytest.mark.parametrize("lost", ["connections", "users"])
def test_one_key_lost_without_the_other_is_made_good_by_a_heartbeat(servers, redis_client, lost):
    a, b = servers
    a.join(*ROOM, "alice", "a-1")
    b.join(*ROOM, "bob", "b-1")
    connections, users = a.keys(*ROOM)
    redis_client.delete(connections if lost == "connections" else users)  # evicted
    made = a.heartbeat(*ROOM, [("alice", "a-1")]) + b.heartbeat(*ROOM, [("bob", "b-1")])
    assert a.read(*ROOM)[0].users == {"alice": 1, "bob": 1}
    if lost == "users":  # they were invisible: present again
        assert sorted(kinds(made)) == [(JOINED, "alice"), (JOINED, "bob")]
    assert kinds(a.leave(*ROOM, "alice", "a-1")) == [(LEFT, "alice")]  # counts right
    assert a.read(*ROOM)[0].users == {"bob": 1}


def test_rooms_and_namespaces_are_apart(servers):
    a, _ = servers
    a.join("/", "team:red", "alice", "c1")
    a.join("/x", "team:red", "bob", "c2")
    a.join("/", "team:blue", "carol", "c3")
    assert a.read("/", "team:red")[0].users == {"alice": 1}
    assert a.read("/x", "team:red")[0].users == {"bob": 1}
    assert a.read("/", "team:blue")[0].users == {"carol": 1}
