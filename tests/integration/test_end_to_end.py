"""The whole path with real processes: producer -> stream -> bridge -> queue -> web -> client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest
import socketio

from streambridge import async_mode, listening
from tests.support import (
    CLI,
    ROOT,
    TEST_ASYNC_MODE,
    Client,
    all_published,
    clean_env,
    cli,
    wait_until,
)

pytestmark = pytest.mark.integration


def connect(clients, web, user):
    client = Client().connect(web, web.login(user))
    clients.append(client)
    return client


def test_redis_cli_xadd_reaches_logged_in_client(web, bridge, clients, redis_server):
    alice = connect(clients, web, "alice")
    out = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "XADD", "events", "*",
         "channel", "message", "body", '"hi"'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stream_id = out.stdout.strip()
    [(channel, body, meta)] = alice.wait_for(1, "message")
    assert (channel, body) == ("message", "hi")
    assert meta["entry"] == stream_id
    assert meta["epoch"]


def test_cli_publish_and_node_producer_are_delivered(web, bridge, clients, env):
    alice = connect(clients, web, "alice")
    out = cli(env, "publish", "message", '{"from": "cli"}', check=True)
    cli_id = out.stdout.strip()
    node = shutil.which("node")
    assert node, "node is part of the set-up"
    out = subprocess.run(
        [node, "producers/examples/node/producer.mjs", "message", '{"from": "node"}'],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    node_id = out.stdout.strip()
    events = alice.wait_for(2, "message")
    assert [(b, m["entry"]) for _, b, m in events] == [
        ({"from": "cli"}, cli_id),
        ({"from": "node"}, node_id),
    ]


def test_cron_shell_example_is_delivered(web, bridge, clients, env):
    alice = connect(clients, web, "alice")
    subprocess.run(
        ["sh", "producers/examples/cron_publish.sh", "message", '"from cron"'],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    [(_, body, _)] = alice.wait_for(1, "message")
    assert body == "from cron"


def test_post_api_appends_and_is_delivered(web, bridge, clients, redis_client):
    alice = connect(clients, web, "alice")
    response = web.login("alice").post(
        web.url + "/api/", json={"channel": "message", "body": {"text": "hello"}}, timeout=5
    )
    assert response.status_code == 200
    data = response.json()
    assert data["status"] is True
    [(_, body, meta)] = alice.wait_for(1, "message")
    assert body == {"text": "hello"}
    assert meta["entry"] == data["id"]
    assert redis_client.xlen("events") == 1


def test_post_api_without_login_is_401_and_appends_nothing(web, redis_client):
    import requests

    response = requests.post(web.url + "/api/", json={"channel": "message", "body": 1}, timeout=5)
    assert response.status_code == 401
    assert response.json()["status"] is False
    assert redis_client.exists("events") == 0


def test_post_api_bad_input_is_400_with_reason(web, redis_client):
    session = web.login("alice")
    response = session.post(web.url + "/api/", json={"channel": "bad channel!", "body": 1})
    assert response.status_code == 400
    assert "channel" in response.json()["error"]
    response = session.post(web.url + "/api/", json={"body": 1})
    assert response.status_code == 400
    assert "channel" in response.json()["error"]
    assert redis_client.exists("events") == 0


def test_socket_without_session_is_refused(web):
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(web)
    assert not client.sio.connected
    assert client.connect_errors == [{"message": "not logged in"}]


def test_user_room_reaches_only_that_user(web, bridge, clients, redis_client):
    alice = connect(clients, web, "alice")
    bob = connect(clients, web, "bob")
    redis_client.xadd("events", {"channel": "message", "body": '"for bob"', "room": "user:bob"})
    redis_client.xadd("events", {"channel": "message", "body": '"for all"'})
    assert [b for _, b, _ in bob.wait_for(2, "message")] == ["for bob", "for all"]
    alice.wait_for(1, "message")
    # The broadcast came after bob's private event, so alice has had every chance to get it.
    assert [b for _, b, _ in alice.received("message")] == ["for all"]


def test_malformed_entries_go_to_dead_letters_and_good_ones_flow(
    web, bridge, clients, redis_client
):
    alice = connect(clients, web, "alice")
    bad = [
        ({"body": '"no channel"'}, "channel: is required"),
        ({"channel": "message", "body": "{not json"}, "body is not valid JSON"),
        ({"channel": "message", "body": json.dumps("x" * 70_000)}, "more than the limit"),
        ({"channel": "bad name!", "body": "1"}, "channel: must be"),
    ]
    good_ids, bad_ids = [], {}
    for n, (fields, reason) in enumerate(bad):
        good_ids.append(redis_client.xadd("events", {"channel": "message", "body": str(n)}))
        bad_ids[redis_client.xadd("events", fields)] = reason
    good_ids.append(redis_client.xadd("events", {"channel": "message", "body": "99"}))

    events = alice.wait_for(len(good_ids), "message")
    assert [m["entry"] for _, _, m in events] == good_ids
    assert [b for _, b, _ in events] == [0, 1, 2, 3, 99]
    dead = wait_until(lambda: len(redis_client.xrange("events:dead")) == 4 and
                      redis_client.xrange("events:dead"), 5, "4 dead letters")  # fmt: skip
    for _, fields in dead:
        assert bad_ids[fields["original_id"]] in fields["reason"]
    assert bridge.alive()
    wait_until(lambda: all_published(redis_client), 5, "all acked")


def test_bridge_sigterm_exits_zero(bridge):
    assert bridge.terminate(timeout=10) == 0
    assert '"bridge.stopped"' in bridge.output()


def test_web_sigterm_exits_zero(web):
    assert web.terminate(timeout=10) == 0


def test_web_serves_under_the_async_mode_of_this_run(web, clients):
    # scripts/test.sh runs the suite under each production mode: make sure it really is
    # that mode, and that the client's WebSocket (not long-polling) was accepted by it.
    expected = os.environ.get(TEST_ASYNC_MODE) or async_mode.DEFAULT
    [listening] = web.log_events("web.listening")
    assert listening["async_mode"] == expected
    alice = connect(clients, web, "alice")
    assert alice.sio.transport() == "websocket"


def test_web_refuses_to_start_without_secret_key(env, tmp_path):
    env = clean_env(REDIS_URL=env["REDIS_URL"])
    out = subprocess.run(
        [*CLI, "web", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2
    assert "STREAMBRIDGE_SECRET_KEY is not set" in out.stderr


@pytest.mark.parametrize(
    ("args", "settings", "taken_for"),
    [
        (("web", "--port", "{taken}"), {}, listening.WEB),
        (("web", "--port", "{taken}"), {"STREAMBRIDGE_ASYNC_MODE": "threading"}, listening.WEB),
        (("web", "--port", "0"), {"STREAMBRIDGE_METRICS_PORT": "{taken}"}, listening.METRICS),
        (("bridge",), {"STREAMBRIDGE_METRICS_PORT": "{taken}"}, listening.METRICS),
    ],
    ids=["web-port", "web-port-threading", "web-metrics-port", "bridge-metrics-port"],
)
def test_a_taken_port_is_named_and_the_process_exits_1(env, args, settings, taken_for):
    with socket.socket() as holder:
        # As a server that shares its port would: one that allows SO_REUSEPORT must
        # still be refused, not split the connections with it.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        env = dict(env, **{k: v.format(taken=taken) for k, v in settings.items()})
        out = cli(env, *(a.format(taken=taken) for a in args))
    assert out.returncode == 1, out.stderr[-2000:]
    assert f"error: cannot listen on 127.0.0.1:{taken} for {taken_for}: " in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert '"cannot_listen"' in out.stdout + out.stderr  # and in the structured log


def test_each_websocket_holds_one_file_descriptor(web, clients):
    # Under gevent, simple-websocket works on a duplicate of the connection's socket;
    # the server closes its own, or 10,000 connections would need 20,000 descriptors.
    def descriptors() -> int:
        return len(os.listdir(f"/proc/{web.process.pid}/fd"))

    session = web.login("alice")
    connect(clients, web, "alice")  # warm-up: pools, the Redis connections
    before = descriptors()
    for _ in range(20):
        clients.append(Client().connect(web, session))
    # Other descriptors come and go meanwhile (the login's HTTP connections): allow a
    # few either way; two per connection would be 40.
    wait_until(lambda: descriptors() - before < 30, 5, "about one descriptor per connection")
    assert descriptors() - before >= 15  # the 20 connections are there
