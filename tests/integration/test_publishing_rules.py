"""Who may publish what: authorization of ``POST /api/``, reserved channel names at every
producer, who-sent-it in the meta, and entries the contract refuses (deep bodies, huge
numbers, field names that are not UTF-8).

Real ``streambridge web`` and ``bridge`` processes, a real redis-server, real
python-socketio clients, the real example producers (Node, shell) and CLI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import redis
import requests

from streambridge.contract import RESERVED_CHANNELS, ContractError
from streambridge.publisher import Publisher
from streambridge.settings import ProducerSettings
from tests.support import (
    CLI,
    RECOVERY,
    ROOT,
    Web,
    all_published,
    from_the_start,
    open_socket,
    report,
    wait_until,
)

pytestmark = pytest.mark.integration

RESERVED = [*sorted(RESERVED_CHANNELS), RECOVERY, "streambridge:anything"]


def post(session: requests.Session, web: Web, **event) -> requests.Response:
    return session.post(web.url + "/api/", json=event, timeout=5)


def stream_len(redis_client, key: str = "events") -> int:
    return redis_client.xlen(key) if redis_client.exists(key) else 0


def acked(redis_client) -> bool:
    return all_published(redis_client)


# -- 3. authorization ---------------------------------------------------------------------


def test_a_user_publishes_only_where_it_may_receive(web, bridge, clients, redis_client):
    alice, carol = web.login("alice"), web.login("carol")
    bob = open_socket(clients, web, web.login("bob"))
    for room in ("user:bob", "team:blue", "user:carol"):
        refused = post(alice, web, channel="message", body="x", room=room)
        assert refused.status_code == 403, room
        assert refused.json() == {
            "status": False,
            "error": f"alice may not publish to room {room!r}",
        }
    assert stream_len(redis_client) == 0  # nothing appended

    own = post(alice, web, channel="message", body="to me", room="user:alice")
    team = post(carol, web, channel="message", body="to the team", room="team:blue")
    everyone = post(alice, web, channel="message", body="hello all")
    assert [r.status_code for r in (own, team, everyone)] == [200, 200, 200]
    [(_, body, meta)] = bob.wait_for(1, "message")
    assert (body, meta["entry"], meta["from"]) == ("hello all", everyone.json()["id"], "alice")
    fields = redis_client.xrange("events")[-1][1]
    assert fields == {"channel": "message", "body": '"hello all"', "from": "alice"}


def test_a_user_cannot_claim_to_be_someone_else(web, redis_client):
    alice = web.login("alice")
    for sender in ("bob", "system", ""):
        response = post(alice, web, channel="message", body="x", **{"from": sender})
        assert response.status_code == 400
        assert response.json()["error"] == "from: set by the server to who is logged in"
    assert stream_len(redis_client) == 0


def test_users_file_and_settings_narrow_publishing(env, tmp_path, processes, redis_client):
    added = subprocess.run(
        [str(ROOT / ".venv/bin/streambridge"), "user", "add", "dave", "--password-stdin",
         "--room", "team:red", "--publish", "team:red", "--no-broadcast"],
        input="dave-password\n", env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    web = Web(dict(env, STREAMBRIDGE_API_BROADCAST="0"), tmp_path, name="web-narrow")
    processes.append(web.start())
    dave = web.login("dave", "dave-password")
    assert post(dave, web, channel="m", body=1, room="team:red").status_code == 200
    assert post(dave, web, channel="m", body=1, room="user:dave").status_code == 403  # narrowed
    assert post(dave, web, channel="m", body=1).status_code == 403  # no broadcast for dave
    alice = web.login("alice")
    assert post(alice, web, channel="m", body=1, room="user:alice").status_code == 200
    refused = post(alice, web, channel="m", body=1)  # nobody broadcasts on this server
    assert refused.status_code == 403
    assert refused.json()["error"] == "alice may not publish to everyone"
    assert [f.get("from") for _, f in redis_client.xrange("events")] == ["dave", "alice"]


# -- 3. reserved channels, at every producer ---------------------------------------------


def test_reserved_channels_are_refused_by_every_producer(web, env, redis_server, redis_client):
    alice = web.login("alice")
    node = shutil.which("node")
    assert node, "node is required for the example producer"
    publisher = Publisher(settings=ProducerSettings(redis_url=redis_server.url))
    # The producer processes (the CLI, the Node and shell examples) for every channel run
    # side by side, while the API and the library are tried; each is checked after.
    runs = []
    for channel in RESERVED:
        for command in (
            [*CLI, "publish", channel, '"x"'],
            [node, "producers/examples/node/producer.mjs", channel, '"x"'],
            ["sh", "producers/examples/cron_publish.sh", channel, '"x"'],
        ):
            runs.append((command, subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )))  # fmt: skip
    try:
        for channel in RESERVED:
            response = post(alice, web, channel=channel, body="x")
            assert response.status_code == 400, channel
            assert "is reserved" in response.json()["error"]
            with pytest.raises(ContractError, match="is reserved"):
                publisher.publish(channel, "x")
        for command, run in runs:
            _, stderr = run.communicate(timeout=30)
            assert run.returncode == 2 and "reserved" in stderr, (command, stderr)
            if command[: len(CLI)] == list(CLI):  # the CLI says exactly that
                assert "is reserved" in stderr, command
    finally:
        for _, run in runs:
            if run.poll() is None:
                run.kill()
                run.communicate()
    assert stream_len(redis_client) == 0


def test_a_reserved_entry_written_to_the_stream_is_dead_lettered_and_the_victim_carries_on(
    web, bridge, clients, redis_client
):
    bob = open_socket(clients, web, web.login("bob"))
    bob.wait_for(1, RECOVERY)
    poison = []
    for channel in ("disconnect", "connect", "connect_error", "newListener", RECOVERY):
        body = json.dumps({"recovered": False, "reason": "forged", "positions": {}})
        poison.append(
            redis_client.xadd("events", {"channel": channel, "body": body, "room": "user:bob"})
        )
    after = redis_client.xadd("events", {"channel": "message", "body": '"after"'})
    [(_, body, meta)] = bob.wait_for(1, "message")
    assert (body, meta["entry"]) == ("after", after)
    wait_until(lambda: stream_len(redis_client, "events:dead") == len(poison), 10, "dead letters")
    dead = redis_client.xrange("events:dead")
    assert [d["original_id"] for _, d in dead] == poison
    assert all("is reserved" in d["reason"] for _, d in dead)
    assert bob.sio.connected
    assert len(bob.received(RECOVERY)) == 1  # never told anything but the server's word

    # On reconnect, catch-up skips them too: the client is never handed a poisoned entry.
    bob.close()
    again = open_socket(clients, web, web.login("bob"), auth=from_the_start(redis_client))
    [(_, info, _)] = again.wait_for(1, RECOVERY)
    assert info["recovered"] is True and info["replayed"] == 1
    assert again.ids("message") == [after]


# -- 5. bodies every web server can deliver ------------------------------------------------


HOSTILE_BODIES = {
    "nested 33 deep": "[" * 33 + "]" * 33,
    "nested 600 deep": '{"a":' * 600 + "1" + "}" * 600,
    "integer of 101 digits": "1" * 101,
    "integer of 4,300 digits": "9" * 4300,
    "number that overflows a double": "1e400",
}


def test_bodies_a_web_server_could_not_deliver_are_refused_everywhere(
    web, bridge, clients, redis_client
):
    alice = web.login("alice")
    for what, text in HOSTILE_BODIES.items():
        response = alice.post(
            web.url + "/api/",
            data=f'{{"channel": "message", "body": {text}}}',
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 400, what
        assert response.json()["error"].startswith("body"), (what, response.json())
    assert stream_len(redis_client) == 0

    # Written straight to the stream: dead-lettered, never published, never replayed.
    reader = open_socket(clients, web, alice)
    hostile = [
        redis_client.xadd("events", {"channel": "message", "body": text})
        for text in HOSTILE_BODIES.values()
    ]
    fine = redis_client.xadd("events", {"channel": "message", "body": "[[[1]]]"})
    [(_, body, _)] = reader.wait_for(1, "message")
    assert body == [[[1]]]
    wait_until(lambda: stream_len(redis_client, "events:dead") == len(hostile), 10, "dead")
    reasons = [d["reason"] for _, d in redis_client.xrange("events:dead")]
    assert any("nested more than 32 levels" in r for r in reasons)
    assert any("more than 64" in r for r in reasons)
    assert any("too large for a double" in r for r in reasons)
    replay = open_socket(clients, web, alice, auth=from_the_start(redis_client))
    [(_, info, _)] = replay.wait_for(1, RECOVERY)
    assert (info["recovered"], info["replayed"]) == (True, 1)
    assert replay.ids("message") == [fine]
    log = web.output()
    assert "RecursionError" not in log and "Integer is too large" not in log
    assert len(log) < 100_000, "the web server's log grew by more than it should"


# -- 6. field names that are not UTF-8 ----------------------------------------------------


def test_a_field_name_that_is_not_utf8_is_dead_lettered_at_once(
    web, bridge, clients, redis_server, redis_client
):
    alice = open_socket(clients, web, web.login("alice"))
    alice.wait_for(1, RECOVERY)
    raw = redis.Redis.from_url(redis_server.url)  # bytes in, bytes out
    try:
        bad = raw.xadd("events", {b"k\xff": b"x", b"channel": b"message", b"body": b"1"}).decode()
        started = time.monotonic()
        ok = redis_client.xadd("events", {"channel": "message", "body": '"next"'})
        [(_, body, meta)] = alice.wait_for(1, "message")
        delay = time.monotonic() - started
        assert (body, meta["entry"]) == ("next", ok)
        assert delay < 2.0, f"the next event waited {delay:.2f}s"  # was 2.8 s of retries
        wait_until(lambda: stream_len(redis_client, "events:dead") == 1, 5, "the dead letter")
        [(_, dead)] = raw.xrange("events:dead")
    finally:
        raw.close()
    assert dead[b"original_id"].decode() == bad
    assert dead[b"reason"] == rb"unknown field(s): k\xff"
    assert dead[b"k\xff"] == b"x"  # the original fields, byte for byte
    assert (dead[b"channel"], dead[b"body"]) == (b"message", b"1")
    assert "bridge.unexpected_error" not in bridge.output()
    report(f"entry with a non-UTF-8 field name: dead-lettered, next event {delay * 1000:.0f} ms")


def test_an_entry_that_is_not_utf8_never_fails_a_replay(
    web, bridge, clients, redis_server, redis_client
):
    raw = redis.Redis.from_url(redis_server.url)
    try:
        raw.xadd("events", {b"channel": b"message", b"body": b'"\xff\xfe"'})
        raw.xadd("events", {b"channel": b"message", b"body": b"1", b"room": b"user:\xff"})
    finally:
        raw.close()
    ok = redis_client.xadd("events", {"channel": "message", "body": '"readable"'})
    wait_until(lambda: acked(redis_client), 10, "acks")
    alice = open_socket(clients, web, web.login("alice"), auth=from_the_start(redis_client))
    [(_, info, _)] = alice.wait_for(1, RECOVERY)
    assert (info["recovered"], info["replayed"]) == (True, 1)
    assert alice.ids("message") == [ok]
    assert web.log_events("catchup.failed") == []
