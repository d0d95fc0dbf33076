"""One web server's presence writer (``PresenceKeeper``) against a real redis-server:
what it writes, announces and keeps through a lost script, an outage and a failed
publish. Its green thread is a plain thread here."""

from __future__ import annotations

import threading
import uuid

import pytest
from streambridge.webapp.ext.presence_keeper import (
    PRESENCE_METHOD,
    PresenceKeeper,
    PresenceUnavailable,
)

from streambridge.embedded_redis import RedisServer
from streambridge.presence import Presence
from tests.support import wait_until

pytestmark = pytest.mark.integration

NS, ROOM = "/", "team:red"


class Harness:
    """A keeper whose announcements and sends are recorded."""

    def __init__(self, client, ttl_s: float = 3.0) -> None:
        self.published: list[dict] = []
        self.starts = 0
        self.failing_publishes = 0
        # A stream of its own: no other test's writer touches its keys.
        registry = Presence(client, f"events-{uuid.uuid4().hex[:8]}", ttl_s)
        self.keeper = PresenceKeeper(registry, self.publish, lambda *a: None, self.start, ttl_s)

    def publish(self, message: dict):
        assert message["method"] == PRESENCE_METHOD
        if self.failing_publishes:
            self.failing_publishes -= 1
            return None
        self.published.append(message)
        return 1

    def start(self, target) -> threading.Thread:
        self.starts += 1
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    def changes(self) -> list[tuple[str, str]]:
        return [(c[2], c[3]) for m in self.published for c in m["changes"]]

    def stale(self) -> list[list[str]]:
        return [room for m in self.published for room in m.get("stale", [])]


@pytest.fixture
def harness(redis_client):
    made = Harness(redis_client)
    yield made
    made.keeper.close()


def test_a_join_noted_after_the_connection_left_is_ignored(harness):
    keeper = harness.keeper
    keeper.connected("s1")
    keeper.join("s1", NS, ROOM, "alice")
    keeper.disconnected("s1")
    keeper.join("s1", NS, ROOM, "alice")  # a subscription answered after the drop
    assert keeper.read(NS, ROOM).users == {}
    assert keeper.local == {}


def test_a_lost_script_is_loaded_again_and_nothing_is_lost(harness, redis_client):
    keeper = harness.keeper
    for sid, user in (("s1", "alice"), ("s2", "bob")):
        keeper.connected(sid)
        keeper.join(sid, NS, ROOM, user)
    assert keeper.read(NS, ROOM).users == {"alice": 1, "bob": 1}
    redis_client.script_flush()  # Redis restarted, failed over
    keeper.disconnected("s1")
    assert keeper.read(NS, ROOM).users == {"bob": 1}
    assert harness.changes() == [("join", "alice"), ("join", "bob"), ("leave", "alice")]


def test_only_one_writer_starts_however_many_threads_note_at_once(harness):
    keeper = harness.keeper
    go = threading.Barrier(32)

    def note(n: int) -> None:
        keeper.connected(f"s{n}")
        go.wait()
        keeper.join(f"s{n}", NS, ROOM, f"user{n}")

    threads = [threading.Thread(target=note, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert harness.starts == 1
    assert len(keeper.read(NS, ROOM).users) == 32


def test_a_failed_publish_makes_the_rooms_stale(harness):
    keeper = harness.keeper
    harness.failing_publishes = 1
    keeper.connected("s1")
    keeper.join("s1", NS, ROOM, "alice")
    assert keeper.read(NS, ROOM).users == {"alice": 1}  # written; not announced
    # Sent as soon as publishing works: the watchers read the room again.
    wait_until(lambda: harness.stale() == [[NS, ROOM]], 5, "the stale notice")
    assert harness.changes() == []


def test_an_outage_keeps_what_was_noted_and_tells_the_watchers_after(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    harness = Harness(server.client(socket_timeout=1, socket_connect_timeout=1))
    keeper = harness.keeper
    try:
        keeper.connected("s1")
        keeper.join("s1", NS, ROOM, "alice")
        assert keeper.read(NS, ROOM).users == {"alice": 1}
        server.stop()
        keeper.connected("s2")
        keeper.join("s2", NS, ROOM, "bob")
        keeper.disconnected("s1")
        with pytest.raises(PresenceUnavailable):
            keeper.read(NS, ROOM, timeout_s=1)
        server = RedisServer(tmp_path / "redis", port=server.port, appendonly=False).start()
        # Redis came back empty: bob's join written, alice's leave is nothing to do,
        # and the heartbeat would put back the rest.
        wait_until(lambda: _users(keeper) == {"bob": 1}, 15, "bob written after the outage")
        assert ("join", "bob") in harness.changes()
    finally:
        keeper.close()
        server.stop()


def _users(keeper):
    try:
        return keeper.read(NS, ROOM, timeout_s=1).users
    except PresenceUnavailable:
        return None
