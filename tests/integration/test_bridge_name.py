"""A bridge's consumer name: stable across restarts (a restarted bridge replays its own
pending entries at once), never shared by two live bridges.

Real ``streambridge bridge`` processes, really SIGKILLed, and a real redis-server.
"""

from __future__ import annotations

import socket
import time

import pytest

from streambridge import keys
from tests.support import RECOVERY, Bridge, Proc, open_socket, report, wait_until

pytestmark = pytest.mark.integration

ACL_PASSWORD = "no-publish-pw"


class DefaultNamedBridge(Proc):
    """``streambridge bridge`` with no ``--consumer``: the default name."""

    def __init__(self, env: dict[str, str], log_dir, name: str) -> None:
        super().__init__(name, ["bridge"], env, log_dir)


def pending(redis_client) -> int:
    return redis_client.xpending("events", "bridge")["pending"]


def test_a_restarted_bridge_replays_its_own_pending_entries_at_once(
    request, env, tmp_path, processes, web, clients, redis_client, redis_server
):
    # Claiming another consumer's entries would take a minute: only the name can help.
    env = dict(env, STREAMBRIDGE_CLAIM_IDLE_MS="60000", STREAMBRIDGE_MAX_DELIVERIES="1000")
    # The first bridge may read but not PUBLISH: what it reads stays pending, as in a
    # bridge that dies between reading and publishing.
    request.addfinalizer(lambda: redis_client.acl_deluser("nopublish"))  # flushall keeps it
    redis_client.acl_setuser(
        "nopublish",
        enabled=True,
        passwords=[f"+{ACL_PASSWORD}"],
        commands=["+@all", "-publish"],
        keys=["*"],
        channels=["*"],
    )
    url = redis_server.url.replace("redis://", f"redis://nopublish:{ACL_PASSWORD}@")
    first = DefaultNamedBridge(dict(env, REDIS_URL=url), tmp_path, "bridge-first")
    processes.append(first.start())
    first.wait_log('"bridge.all_ready"')
    alice = open_socket(clients, web, web.login("alice"))
    alice.wait_for(1, RECOVERY)
    pipe = redis_client.pipeline(transaction=True)  # one batch: all three read together
    for n in range(3):
        pipe.xadd("events", {"channel": "message", "body": str(n)})
    ids = pipe.execute()
    first.wait_log('"bridge.publish_failed"')
    wait_until(lambda: pending(redis_client) == 3, 10, "three pending entries")
    first.kill()  # SIGKILL: its name's liveness key stays behind, naming a dead process
    name = socket.gethostname()
    assert redis_client.exists(keys.alive("events", "bridge", name))

    started = time.monotonic()
    second = DefaultNamedBridge(env, tmp_path, "bridge-second")
    processes.append(second.start())
    alice.wait_for(3, "message", timeout=15)
    took = time.monotonic() - started
    assert alice.ids("message") == ids
    assert took < 15, f"{took:.1f}s"  # not the 60 s claim_idle_ms
    [taken] = second.log_events("bridge.consumer_taken_over")
    assert taken["previous"].startswith(f"{name}|")
    assert taken["previous"].split("|")[2] == str(first.process.pid)
    wait_until(lambda: pending(redis_client) == 0, 5, "the replayed entries acked")
    report(f"bridge SIGKILLed with 3 pending: its restart delivered them in {took:.1f}s")


def test_a_second_live_bridge_with_the_same_name_is_refused(
    env, tmp_path, processes, web, clients, redis_client
):
    first = Bridge(env, tmp_path, name="twin")
    processes.append(first.start())
    twin = Proc("twin-again", ["bridge", "--consumer", "twin"], env, tmp_path)
    processes.append(twin.start())
    assert twin.process.wait(20) == 2
    assert "is held by a live bridge" in twin.output()
    [refusal] = twin.log_events("bridge.duplicate_consumer")
    assert "twin" in refusal["error"]
    # The first one never noticed: it still delivers.
    alice = open_socket(clients, web, web.login("alice"))
    stream_id = redis_client.xadd("events", {"channel": "message", "body": '"still one"'})
    alice.wait_for(1, "message")
    assert alice.ids("message") == [stream_id]
    assert first.alive()


def test_a_cleanly_stopped_bridge_frees_its_name_at_once(env, tmp_path, processes, redis_client):
    first = Bridge(env, tmp_path, name="handover")
    processes.append(first.start())
    assert redis_client.exists(keys.alive("events", "bridge", "handover"))
    assert first.terminate() == 0
    assert not redis_client.exists(keys.alive("events", "bridge", "handover"))
    again = Bridge(env, tmp_path, name="handover")
    processes.append(again.start())  # no wait for a TTL, no refusal
    assert not again.log_events("bridge.duplicate_consumer")
