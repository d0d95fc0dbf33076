"""What a logged-in client sends on its socket: never a server life-cycle event.

Real ``streambridge web`` and ``bridge`` processes, real python-socketio clients (whose
``emit`` sends reserved names as they are, as an attacker's client would).
"""

from __future__ import annotations

import pytest

from tests.support import RECOVERY, Web, all_published, from_the_start, open_socket, wait_until

pytestmark = pytest.mark.integration


def test_a_socket_that_sends_disconnect_is_closed_not_forgotten(web, bridge, clients, redis_client):
    session = web.login("alice")
    sneaky = open_socket(clients, web, session)
    sneaky.wait_for(1, RECOVERY)
    sneaky.sio.emit("disconnect", "io client disconnect")
    # The attacker's plan: log out (or let the login expire) and keep listening.
    assert session.post(web.url + "/logout", allow_redirects=False, timeout=5).status_code == 302
    wait_until(lambda: not sneaky.sio.connected, 3, "the socket to be closed by the server")
    redis_client.xadd("events", {"channel": "message", "body": '"private"', "room": "user:alice"})
    redis_client.xadd("events", {"channel": "message", "body": '"for all"'})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    assert sneaky.received("message") == []
    [refusal] = web.log_events("socket.reserved_event_refused")
    assert refusal["name"] == "'disconnect'"


def test_a_socket_that_sends_connect_gets_no_second_catch_up(
    env, tmp_path, processes, bridge, clients, redis_client
):
    web = Web(env, tmp_path, name="web-metrics", metrics=True)
    processes.append(web.start())
    for n in range(50):
        redis_client.xadd("events", {"channel": "message", "body": str(n)})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    session = web.login("alice")
    bystander = open_socket(clients, web, session)
    bystander.wait_for(1, RECOVERY)  # its catch-up done, and logged
    replaying = open_socket(clients, web, session, auth=from_the_start(redis_client))
    [(_, info, _)] = replaying.wait_for(1, RECOVERY)
    assert info["replayed"] == 50
    for _ in range(20):
        replaying.sio.emit("connect", {"last_id": "0-0"})
    wait_until(lambda: not replaying.sio.connected, 3, "the socket to be closed by the server")
    assert len(replaying.received(RECOVERY)) == 1
    assert len(replaying.received("message")) == 50  # one catch-up, not 21
    assert len(web.log_events("catchup.done")) == 2  # one per real connect
    assert bystander.sio.connected
    # The gauge counts sockets that exist: the bystander only.
    gauge = "streambridge_web_connected_clients "
    wait_until(lambda: web.metric(gauge) == 1.0, 3, "the gauge to count one client")


@pytest.mark.parametrize(
    "name",
    ["connect_error", "newListener", "removeListener", "disconnecting", "streambridge:recovery"],
)
def test_other_reserved_names_close_the_socket(web, clients, name):
    client = open_socket(clients, web, web.login("alice"))
    client.sio.emit(name, {"recovered": False})
    wait_until(lambda: not client.sio.connected, 3, f"the socket that sent {name!r} to close")


def test_an_event_without_a_name_closes_the_socket_and_others_are_ignored(
    web, bridge, clients, redis_client
):
    harmless = open_socket(clients, web, web.login("alice"))
    for event in ("message", "hello", "join"):
        harmless.sio.emit(event, "x")
    nameless = open_socket(clients, web, web.login("bob"))
    nameless.sio.eio.send('2[42,"no name"]')  # a raw Socket.IO EVENT packet
    wait_until(lambda: not nameless.sio.connected, 3, "the nameless sender to be closed")
    redis_client.xadd("events", {"channel": "message", "body": '"still here"'})
    harmless.wait_for(1, "message")
    assert harmless.sio.connected


def test_every_client_is_pinged_by_the_server_and_stays_connected(
    env, tmp_path, processes, bridge, clients, redis_client
):
    from engineio import packet

    from tests.support import start_web

    web = start_web(env, tmp_path, processes, "web-pings", STREAMBRIDGE_PING_INTERVAL_S="0.3")
    pinged: dict[int, int] = {}
    for n in range(3):
        client = open_socket(clients, web, web.login("alice"))
        receive = client.sio.eio._receive_packet

        def counting(pkt, n=n, receive=receive):
            if pkt.packet_type == packet.PING:
                pinged[n] = pinged.get(n, 0) + 1
            return receive(pkt)

        client.sio.eio._receive_packet = counting
    wait_until(lambda: len(pinged) == 3 and min(pinged.values()) >= 4, 10, "four pings each")
    redis_client.xadd("events", {"channel": "message", "body": '"still here"'})
    for client in clients:
        client.wait_for(1, "message")
        assert client.sio.connected
