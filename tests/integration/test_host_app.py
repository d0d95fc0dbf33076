"""examples/host_app, run for real: a Flask-Login app that embeds streambridge."""

from __future__ import annotations

import json

import pytest
import requests
import socketio

from tests.support import Client, HostApp, csrf_token, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def host(env, tmp_path, processes):
    proc = HostApp(env, tmp_path)
    processes.append(proc)
    return proc.start()


def test_host_login_connect_and_receive_only_own_events(host, bridge, clients, redis_client):
    alice = Client().connect(host, host.login("alice"))
    bob = Client().connect(host, host.login("bob"))
    clients.extend([alice, bob])
    redis_client.xadd("events", {"channel": "message", "body": '"to bob"', "room": "user:bob"})
    redis_client.xadd("events", {"channel": "message", "body": '"to team"', "room": "team:blue"})
    redis_client.xadd("events", {"channel": "message", "body": '"to alice"', "room": "user:alice"})
    redis_client.xadd("events", {"channel": "message", "body": '"to all"'})
    assert [b for _, b, _ in alice.wait_for(3, "message")] == ["to team", "to alice", "to all"]
    assert [b for _, b, _ in bob.wait_for(2, "message")] == ["to bob", "to all"]
    # "to all" came last, so everything meant for them has arrived by now.
    assert [b for _, b, _ in alice.received("message")] == ["to team", "to alice", "to all"]


def test_host_refuses_a_socket_without_its_login(host):
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(host)
    assert client.connect_errors == [{"message": "not logged in"}]


def test_host_wrong_password_is_refused(host):
    response = requests.post(
        host.url + "/login", data={"name": "alice", "secret": "nope"}, timeout=5
    )
    assert response.status_code == 401


def test_host_app_publishes_through_the_extension(host, bridge, clients):
    session = host.login("alice")
    alice = Client().connect(host, session)
    clients.append(alice)
    response = session.post(host.url + "/notify", data={"text": "deployed"}, timeout=5)
    assert response.status_code == 200
    [(_, body, meta)] = alice.wait_for(1, "message")
    assert body == {"text": "deployed"}
    assert (meta["entry"], meta["from"]) == (response.json()["id"], "alice")
    # The app's authorize_publish hook decides: never into another user's room.
    refused = session.post(host.url + "/notify", data={"text": "x", "room": "user:bob"}, timeout=5)
    assert refused.status_code == 403
    assert refused.json() == {"error": "alice may not publish to room 'user:bob'"}


def test_client_script_is_served_in_one_file(host):
    response = requests.get(host.url + "/streambridge.js", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert "StreamBridge" in response.text and "io" in response.text
    again = requests.get(
        host.url + "/streambridge.js",
        headers={"If-None-Match": response.headers["ETag"]},
        timeout=5,
    )
    assert again.status_code == 304


def test_host_dashboard_for_its_admins_with_its_own_csrf(host, bridge, redis_client):
    # The host app has no Flask-WTF set-up of its own: the dashboard's token still works.
    redis_client.xadd("events", {"channel": "connect", "body": "1"})  # dead-lettered
    wait_until(lambda: redis_client.xlen("events:dead") == 1, 10, "a dead letter")
    bob = host.login("bob")
    assert bob.get(host.url + "/streambridge/dashboard", timeout=5).status_code == 403
    alice = host.login("alice")
    page = alice.get(host.url + "/streambridge/dashboard", timeout=5)
    assert page.status_code == 200
    token = csrf_token(page.text)
    url = host.url + "/streambridge/dashboard/dead/delete"
    body = json.dumps({"all": True})
    json_type = {"Content-Type": "application/json"}
    assert alice.post(url, data=body, headers=json_type, timeout=5).status_code == 400
    done = alice.post(url, data=body, headers={**json_type, "X-CSRFToken": token}, timeout=5)
    assert done.json() == {"status": True, "count": 1}
    assert redis_client.xlen("events:dead") == 0
