"""The bridge against a hostile Redis, and the operator commands: real processes,
real redis-server, every wait bounded by a deadline."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from streambridge.embedded_redis import RedisServer, free_port
from tests.support import Bridge, Client, cli, wait_until

pytestmark = pytest.mark.integration


# -- helpers ---------------------------------------------------------------------------


def timestamp(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def connect(clients, web, user: str = "alice") -> Client:
    client = Client().connect(web, web.login(user))
    clients.append(client)
    return client


def message(body: object) -> dict[str, str]:
    return {"channel": "message", "body": json.dumps(body)}


def acked(rc, entry_id: str, group: str = "bridge") -> bool:
    """``entry_id`` (the newest entry) was delivered to the group and nothing is pending."""
    groups = {g["name"]: g for g in rc.xinfo_groups("events")}
    return (
        group in groups
        and groups[group]["last-delivered-id"] == entry_id
        and rc.xpending("events", group)["pending"] == 0
    )


def blocked_in_xreadgroup(rc) -> bool:
    return any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in rc.client_list())


def start_bridge(env, tmp_path, processes, name: str = "bridge", wait: bool = True) -> Bridge:
    proc = Bridge(env, tmp_path, name=name)
    processes.append(proc)
    return proc.start(wait=wait)


# -- Redis in a bad state ---------------------------------------------------------------
def test_wrongtype_stream_key_backs_off_then_recovers(env, tmp_path, processes, web, clients,
                                                      redis_client):  # fmt: skip
    redis_client.set("events", "x")
    env = dict(env, STREAMBRIDGE_BACKOFF_MAX_S="1")
    bridge = start_bridge(env, tmp_path, processes, wait=False)

    # Back-off 0.1 s doubling, capped at 1 s, jitter x0.8..1: the first six warnings
    # span at least 0.8 * (0.1 + 0.2 + 0.4 + 0.8 + 1.0) = 2.0 s. A tight loop would
    # write thousands of lines in that time.
    wait_until(
        lambda: len(bridge.log_events("bridge.stream_not_ready")) >= 6 or not bridge.alive(),
        15,
        "six bridge.stream_not_ready warnings",
    )
    assert bridge.alive(), bridge.output()[-3000:]
    warnings = bridge.log_events("bridge.stream_not_ready")
    assert len(warnings) < 10
    span = timestamp(warnings[5]) - timestamp(warnings[0])
    assert span >= 1.9, f"six warnings within {span:.3f}s: no back-off"
    delays = [w["retry_in_s"] for w in warnings]
    assert all(0 < d <= 1.0 for d in delays), delays
    assert delays[4] >= 0.7, delays  # it grew towards the cap
    assert "string" in warnings[0]["error"]  # says what is wrong with the key
    assert '"bridge.ready"' not in bridge.output()
    assert '"bridge.unexpected_error"' not in bridge.output()

    redis_client.delete("events")
    bridge.wait_log('"bridge.ready"', timeout=5)
    alice = connect(clients, web)
    entry_id = redis_client.xadd("events", message({"after": "wrongtype"}))
    [(_, body, meta)] = alice.wait_for(1, "message")
    assert (body, meta["entry"]) == ({"after": "wrongtype"}, entry_id)
    wait_until(lambda: acked(redis_client, entry_id), 5, "entry acked")


def test_stream_deleted_while_bridge_blocks_is_recreated(env, tmp_path, processes, web, clients,
                                                         redis_client):  # fmt: skip
    env = dict(env, STREAMBRIDGE_BLOCK_MS="500")
    bridge = start_bridge(env, tmp_path, processes)
    alice = connect(clients, web)
    first = redis_client.xadd("events", message(1))
    alice.wait_for(1, "message")
    epoch_before = redis_client.get("events:epoch")
    assert epoch_before

    wait_until(lambda: blocked_in_xreadgroup(redis_client), 5, "bridge blocked in XREADGROUP")
    mark = len(bridge.output())
    assert redis_client.delete("events") == 1  # the group goes with the stream
    second = redis_client.xadd("events", message(2))

    events = alice.wait_for(2, "message")
    assert [(b, m["entry"]) for _, b, m in events] == [(1, first), (2, second)]
    wait_until(lambda: acked(redis_client, second), 5, "new entry acked in the new group")
    epoch_after = redis_client.get("events:epoch")
    assert epoch_after and epoch_after != epoch_before
    assert bridge.log_events("bridge.group_created", after=mark)
    assert bridge.log_events("bridge.ready", after=mark)[-1]["epoch"] == epoch_after
    assert bridge.alive()
    assert '"bridge.unexpected_error"' not in bridge.output()


def test_stream_deleted_while_blocked_is_reported_as_group_missing(env, tmp_path, processes,
                                                                   redis_client):  # fmt: skip
    env = dict(env, STREAMBRIDGE_BLOCK_MS="5000")  # surely still blocked when DEL comes
    bridge = start_bridge(env, tmp_path, processes)
    wait_until(lambda: blocked_in_xreadgroup(redis_client), 5, "bridge blocked in XREADGROUP")
    mark = len(bridge.output())
    redis_client.delete("events")
    bridge.wait_log('"bridge.ready"', timeout=5, after=mark)
    assert not bridge.log_events("bridge.redis_error", after=mark)
    assert bridge.log_events("bridge.group_missing", after=mark)


def test_redis_absent_at_start(env, tmp_path, processes):
    # A port (given: the bridge is told it before the server starts), no process yet.
    server = RedisServer(tmp_path / "redis-late", port=free_port())
    try:
        env = dict(env, REDIS_URL=server.url, STREAMBRIDGE_BACKOFF_MAX_S="1")
        bridge = start_bridge(env, tmp_path, processes, name="bridge-late", wait=False)
        wait_until(
            lambda: len(bridge.log_events("bridge.redis_unavailable")) >= 2 or not bridge.alive(),
            10,
            "two bridge.redis_unavailable warnings",
        )
        assert bridge.alive(), bridge.output()[-3000:]
        assert '"bridge.ready"' not in bridge.output()

        server.start()
        bridge.wait_log('"bridge.ready"', timeout=10)
        rc = server.client()
        entry_id = rc.xadd("events", message("late"))
        wait_until(lambda: acked(rc, entry_id), 10, "entry acked")
        assert rc.xlen("events:dead") == 0
        assert bridge.alive()
        rc.close()
    finally:
        server.stop()


def test_redis_killed_midrun_bridge_waits_and_resumes(env, tmp_path, processes):
    server = RedisServer(tmp_path / "redis-kill", appendonly=True, appendfsync="always").start()
    try:
        env = dict(env, REDIS_URL=server.url, STREAMBRIDGE_BACKOFF_MAX_S="1")
        bridge = start_bridge(env, tmp_path, processes, name="bridge-k")
        rc = server.client()
        before = [rc.xadd("events", message(i)) for i in range(20)]
        wait_until(lambda: acked(rc, before[-1]), 10, "entries before the kill acked")
        epoch = rc.get("events:epoch")
        rc.close()

        mark = len(bridge.output())
        server.kill()  # SIGKILL: no goodbye on the bridge's connection
        bridge.wait_log('"bridge.redis_unavailable"', timeout=10, after=mark)
        assert bridge.alive()

        server = RedisServer(
            server.directory, port=server.port, appendonly=True, appendfsync="always"
        ).start()
        rc = server.client()
        after = [rc.xadd("events", message(i)) for i in range(20, 40)]
        wait_until(lambda: acked(rc, after[-1]), 15, "entries after the restart acked")
        assert rc.xlen("events") == 40  # appendfsync always: nothing lost in Redis
        assert rc.xlen("events:dead") == 0
        # The group survived in the AOF: same history, so the epoch must not change.
        assert rc.get("events:epoch") == epoch
        assert not bridge.log_events("bridge.group_created", after=mark)
        assert bridge.log_events("bridge.ready", after=mark)
        assert bridge.alive()
        rc.close()
    finally:
        server.stop()


def test_sigterm_while_idle_exits_promptly(env, tmp_path, processes, redis_client):
    block_ms = 1000
    env = dict(env, STREAMBRIDGE_BLOCK_MS=str(block_ms))
    bridge = start_bridge(env, tmp_path, processes, name="bridge-t")
    wait_until(lambda: blocked_in_xreadgroup(redis_client), 5, "bridge blocked in XREADGROUP")
    started = time.monotonic()
    code = bridge.terminate(timeout=block_ms / 1000 + 5)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < block_ms / 1000 + 2.0, f"took {elapsed:.2f}s to stop"
    assert bridge.log_events("bridge.signal")[0]["signal"] == "SIGTERM"
    assert bridge.log_events("bridge.stopped")


# -- operator commands --------------------------------------------------------------------
def test_status_shows_stream_groups_consumers_and_dead_letters(env, tmp_path, processes,
                                                               redis_client):  # fmt: skip
    env = dict(env, STREAMBRIDGE_CLAIM_IDLE_MS="60000")
    start_bridge(env, tmp_path, processes, name="bridge-s1")
    good = [redis_client.xadd("events", message(i)) for i in range(3)]
    bad = redis_client.xadd("events", {"channel": "message"})  # no body: dead letter
    wait_until(lambda: acked(redis_client, bad), 10, "bridge done")
    assert redis_client.xlen("events:dead") == 1
    # A second group with entries read and never acked: pending counts that are not 0.
    redis_client.xgroup_create("events", "audit", id="0")
    redis_client.xreadgroup("audit", "reader", {"events": ">"}, count=2)

    out = cli(env, "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["stream"] == "events"
    assert data["exists"] is True
    assert data["length"] == 4
    assert (data["first_id"], data["last_id"]) == (good[0], bad)
    assert data["dead_letters"] == 1
    assert data["epoch"] == redis_client.get("events:epoch")
    groups = {g["name"]: g for g in data["groups"]}
    assert set(groups) == {"bridge", "audit"}
    bridge_group = groups["bridge"]
    assert (bridge_group["pending"], bridge_group["last_delivered_id"]) == (0, bad)
    assert bridge_group["lag"] in (0, None)
    assert [(c["name"], c["pending"]) for c in bridge_group["consumers"]] == [("bridge-s1", 0)]
    audit = groups["audit"]
    assert (audit["pending"], audit["last_delivered_id"]) == (2, good[1])
    assert [(c["name"], c["pending"]) for c in audit["consumers"]] == [("reader", 2)]

    out = cli(env, "status")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "group bridge:" in text and "pending 0" in text
    assert "group audit:" in text and "pending 2" in text
    assert "bridge-s1" in text and "reader" in text
    assert "dead letters  1" in text
    assert f"last id       {bad}" in text


def test_status_when_stream_is_missing_or_not_a_stream(env, redis_client):
    out = cli(env, "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["exists"], data["length"], data["groups"], data["dead_letters"]) == (
        False,
        0,
        [],
        0,
    )
    redis_client.set("events", "x")
    out = cli(env, "status", "--json")
    assert out.returncode == 0, out.stderr
    assert "not a stream" in json.loads(out.stdout)["error"]


def test_dead_list_and_requeue_of_a_malformed_entry(env, bridge, redis_client):
    bad_fields = {"channel": "message", "body": "{not json"}
    bad = redis_client.xadd("events", bad_fields)
    wait_until(lambda: acked(redis_client, bad), 10, "bad entry dead-lettered")

    out = cli(env, "dead", "list", "--json")
    assert out.returncode == 0, out.stderr
    [letter] = json.loads(out.stdout)
    assert letter["original_id"] == bad
    assert letter["consumer"] == "bridge"
    assert letter["fields"] == bad_fields
    assert "body" in letter["reason"].lower()
    out = cli(env, "dead", "list")
    assert out.returncode == 0, out.stderr
    assert letter["id"] in out.stdout and letter["reason"] in out.stdout

    out = cli(env, "dead", "requeue", letter["id"])
    assert out.returncode == 0, out.stderr
    dead_id, arrow, new_id = out.stdout.split()
    assert (dead_id, arrow) == (letter["id"], "->")
    assert "requeued 1" in out.stderr
    assert redis_client.xrange("events:dead", dead_id, dead_id) == []
    # Back in the stream as the producer wrote it, without the dead-letter fields.
    assert redis_client.xrange("events", new_id, new_id) == [(new_id, bad_fields)]
    # Still malformed: the bridge dead-letters the new entry again, with its new id.
    wait_until(lambda: acked(redis_client, new_id), 10, "requeued entry read again")
    [(_, again)] = redis_client.xrange("events:dead", "-", "+")
    assert again["original_id"] == new_id


def test_requeued_dead_letter_reaches_the_client(web, bridge, clients, redis_client, env):
    alice = connect(clients, web)
    letter = {
        **message({"fixed": True}),
        "reason": "publish failed",
        "original_id": "1-1",
        "consumer": "bridge-gone",
    }
    first = redis_client.xadd("events:dead", letter)
    second = redis_client.xadd("events:dead", {**letter, **message({"fixed": 2})})

    out = cli(env, "dead", "requeue", first)
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.split()[-1]
    [(_, body, meta)] = alice.wait_for(1, "message")
    assert (body, meta["entry"]) == ({"fixed": True}, new_id)

    out = cli(env, "dead", "requeue", "--all")
    assert out.returncode == 0, out.stderr
    [(dead_id, new_id)] = [line.split(" -> ") for line in out.stdout.splitlines()]
    assert dead_id == second
    events = alice.wait_for(2, "message")
    assert (events[1][1], events[1][2]["entry"]) == ({"fixed": 2}, new_id)
    assert redis_client.xlen("events:dead") == 0
    wait_until(lambda: acked(redis_client, new_id), 5, "requeued entries acked")


def test_dead_requeue_usage_errors_move_nothing(env, redis_client):
    dead_id = redis_client.xadd(
        "events:dead", {**message("x"), "reason": "r", "original_id": "1-1", "consumer": "c"}
    )

    def unchanged() -> bool:
        return redis_client.xlen("events:dead") == 1 and not redis_client.exists("events")

    out = cli(env, "dead", "requeue")
    assert out.returncode == 2
    assert "--all" in out.stderr
    out = cli(env, "dead", "requeue", "--all", dead_id)
    assert out.returncode == 2
    assert unchanged()

    out = cli(env, "dead", "requeue", dead_id, "1-1")  # one known, one unknown: all or nothing
    assert out.returncode == 1
    assert "no dead letter 1-1" in out.stderr
    assert unchanged()


def test_dead_requeue_malformed_id_is_a_clean_error(env, redis_client):
    dead_id = redis_client.xadd(
        "events:dead", {**message("x"), "reason": "r", "original_id": "1-1", "consumer": "c"}
    )
    out = cli(env, "dead", "requeue", dead_id, "not-an-id")
    assert redis_client.xlen("events:dead") == 1 and not redis_client.exists("events")
    assert out.returncode in (1, 2)
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error:") and "not-an-id" in out.stderr


def test_status_with_redis_unreachable_is_a_clean_error(env, tmp_path):
    down = RedisServer(tmp_path / "redis-down")  # never started: nothing listens there
    out = cli(dict(env, REDIS_URL=down.url), "status")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error:")
