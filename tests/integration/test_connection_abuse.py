"""Attacks on the web server's connections, by a client without a login: bodies it will
not read, handlers that never return, request heads that drip, floods from one address.

Real ``streambridge web`` processes and raw TCP sockets, as an attacker would use them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
import requests
import websocket  # websocket-client, as python-socketio's client uses

from tests.support import SOCKETIO_PATH, Web, open_socket, report, start_web, wait_until

pytestmark = pytest.mark.integration

OTHER_ADDRESS = "127.0.0.2"  # another client: all of 127/8 is loopback on Linux


def connect(web: Web, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", web.port), timeout=timeout, source_address=(source, 0)
    )


def status_of(sock: socket.socket) -> int | None:
    """The status code the server answered with, or None if it closed or stayed silent."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except TimeoutError:
        return None
    return int(data.split(b" ", 2)[1])


@contextlib.contextmanager
def connections(web: Web, count: int, timeout: float = 5.0) -> Iterator[list[socket.socket]]:
    """``count`` open TCP connections to ``web``, closed at the end."""
    socks = [connect(web, timeout=timeout) for _ in range(count)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def get(web: Web, path: str = "/healthz", source: str = "127.0.0.1") -> int | None:
    with connect(web, source) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return status_of(sock)


def polling_sid(web: Web) -> str:
    """An anonymous Engine.IO long-polling session (no cookie, no Socket.IO connect)."""
    response = requests.get(f"{web.url}{SOCKETIO_PATH}/?EIO=4&transport=polling", timeout=5)
    assert response.status_code == 200
    return json.loads(response.text[1:])["sid"]


def polling_post(
    sid: str, length: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """A long-polling POST of session ``sid`` that announces ``length`` bytes and sends
    ``body`` of them."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"POST {SOCKETIO_PATH}/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode() + body


def open_connections(web: Web) -> list[str]:
    """Status of every TCP connection the web server holds on its port (not the listener)."""
    conns = psutil.Process(web.process.pid).net_connections(kind="tcp")
    return [c.status for c in conns if c.laddr.port == web.port and c.status != psutil.CONN_LISTEN]


def test_oversized_polling_post_is_refused_at_once_and_holds_nothing(env, tmp_path, processes):
    # The reported set-up: 30 connection slots, 30 anonymous attackers.
    web = start_web(env, tmp_path, processes, "web-capped", STREAMBRIDGE_MAX_CONNECTIONS="30")
    started = time.monotonic()
    for _ in range(30):
        sid = polling_sid(web)
        with connect(web) as sock:
            sock.sendall(polling_post(sid, 300_000))  # the headers only: the body never comes
            assert status_of(sock) == 413
    elapsed = time.monotonic() - started
    assert requests.get(web.url + "/healthz", timeout=2).status_code == 200
    wait_until(lambda: not open_connections(web), 5, "no connection left open")
    assert len(web.log_events("web.request_refused")) == 30
    report(f"30 oversized anonymous polling POSTs refused (413) in {elapsed:.2f}s; 0 held")


def test_a_chunked_or_malformed_body_is_refused_before_the_app(web, redis_client):
    session = web.login("alice")
    chunked = session.post(
        web.url + "/api/",
        data=iter([b'{"channel": "message", ', b'"body": "chunked"}']),  # no length: chunked
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert chunked.status_code == 411
    assert chunked.json() == {
        "status": False,
        "error": "send the request body with a Content-Length",
    }
    with connect(web) as sock:
        huge = b"Content-Length: 99999999999999999999\r\n"
        sock.sendall(b"POST /api/ HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n")
        assert status_of(sock) == 413
    assert not redis_client.exists("events")


def test_a_handler_that_never_returns_is_cut_at_the_request_deadline(
    env, tmp_path, processes
):  # fmt: skip
    class StuckApp(Web):
        command = ("tests/apps/stuck_app.py",)
        subcommand = ()

    app = StuckApp(
        dict(env, STREAMBRIDGE_MAX_CONNECTIONS="5", STREAMBRIDGE_REQUEST_TIMEOUT_S="2"),
        tmp_path,
        name="stuck-app",
    )
    processes.append(app.start())
    with connections(app, 5, timeout=10) as stuck:  # every connection slot
        sent = time.monotonic()
        for sock in stuck:
            sock.sendall(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [status_of(sock) for sock in stuck]
        held = time.monotonic() - sent
        assert all(sock.recv(100) == b"" for sock in stuck)  # and closed by the server
    assert answers == [503] * 5
    assert 1.5 < held < 9, f"stuck handlers held their connections {held:.1f}s"
    assert requests.get(app.url + "/healthz", timeout=2).status_code == 200
    timeouts = app.log_events("web.request_timeout")
    assert len(timeouts) == 5
    assert all(t["waiting_in"].startswith("stuck_app.py:") for t in timeouts), timeouts
    report(f"5 handlers that never return: cut after {held:.1f}s (deadline 2 s)")


def test_a_request_head_that_drips_is_cut_at_the_head_deadline(env, tmp_path, processes):
    web = start_web(env, tmp_path, processes, "web-drip", STREAMBRIDGE_REQUEST_HEAD_TIMEOUT_S="2")
    with connections(web, 3, timeout=10) as drips:
        started = time.monotonic()
        for sock in drips:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        # One header line every 0.25 s, each well inside any idle timeout, for 2.5 s.
        for n in range(10):
            for sock in drips:
                with contextlib.suppress(OSError):  # the server may have cut it already
                    sock.sendall(f"X-Drip-{n}: y\r\n".encode())
            time.sleep(0.25)  # the drip itself
        answers = [status_of(sock) for sock in drips]
        assert all(sock.recv(100) == b"" for sock in drips)  # and the connections closed
        cut_after = time.monotonic() - started
    assert answers == [408, 408, 408]
    assert cut_after < 7  # 2.5 s of it is the drip itself
    assert requests.get(web.url + "/healthz", timeout=2).status_code == 200


def test_per_address_cap_on_open_connections(env, tmp_path, processes):
    web = start_web(
        env, tmp_path, processes, "web-per-address", STREAMBRIDGE_MAX_CONNECTIONS_PER_ADDRESS="5"
    )
    with connections(web, 5):  # connected, silent
        wait_until(lambda: get(web) == 429, 5, "the sixth connection to be refused")
        with connect(web) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 429 ") and b"too many connections" in reply
        assert get(web, source=OTHER_ADDRESS) == 200  # other clients are served
    wait_until(lambda: get(web) == 200, 5, "a connection once the idle ones closed")
    assert web.log_events("web.connection_refused")

    # Behind a trusted proxy every client shares the proxy's address: no cap there.
    proxied = start_web(
        env,
        tmp_path,
        processes,
        "web-proxied",
        STREAMBRIDGE_MAX_CONNECTIONS_PER_ADDRESS="5",
        STREAMBRIDGE_TRUSTED_PROXIES="1",
    )
    with connections(proxied, 5):  # connected, silent
        assert get(proxied) == 200


def test_per_address_cap_on_unfinished_requests(env, tmp_path, processes):
    web = start_web(
        env,
        tmp_path,
        processes,
        "web-unfinished",
        STREAMBRIDGE_MAX_UNFINISHED_PER_ADDRESS="3",
        STREAMBRIDGE_REQUEST_HEAD_TIMEOUT_S="30",
    )
    with connections(web, 3) as halves:
        for sock in halves:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line yet
        wait_until(lambda: get(web) == 429, 5, "a fourth request head to be refused")
        assert get(web, source=OTHER_ADDRESS) == 200
        halves[0].sendall(b"\r\n")  # one of them finishes its request
        assert status_of(halves[0]) == 200
        wait_until(lambda: get(web) == 200, 5, "a new request once a slot is free")


@pytest.mark.parametrize(
    "upgrade",
    [{}, {"Upgrade": "websocket", "Connection": "Upgrade"}],  # a header proves nothing
    ids=["plain", "claims-websocket"],
)
def test_a_bad_polling_post_is_answered_at_once(web, upgrade):
    # A lone NOOP packet: python-engineio refuses it and disconnects the session,
    # which (upstream) waits in the handler for a poll that never comes.
    sid = polling_sid(web)
    with connect(web, timeout=5) as sock:
        sock.sendall(polling_post(sid, 1, upgrade, b"6"))
        assert status_of(sock) == 400  # not None: answered well within 5 s
    assert not web.log_events("web.request_timeout")


@pytest.mark.parametrize(
    "upgrade",
    [{}, {"Upgrade": "websocket", "Connection": "Upgrade"}],  # only a handshake lifts it
    ids=["plain", "claims-websocket"],
)
def test_a_polling_body_that_drips_is_cut_at_the_request_deadline(
    env, tmp_path, processes, upgrade
):
    web = start_web(env, tmp_path, processes, "web-deadline", STREAMBRIDGE_REQUEST_TIMEOUT_S="2")
    sid = polling_sid(web)
    with connect(web, timeout=10) as sock:
        sock.sendall(polling_post(sid, 1000, upgrade, b"4"))  # 1 of 1,000 bytes
        started = time.monotonic()
        sock.settimeout(0.25)
        closed_after = None
        while time.monotonic() - started < 15:  # one byte every 0.25 s: never idle
            try:
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
    assert closed_after is not None and closed_after < 7, closed_after
    [timeout] = web.log_events("web.request_timeout")
    assert timeout["path"] == f"{SOCKETIO_PATH}/"


def test_a_websocket_outlives_the_request_deadline(
    env, tmp_path, processes, bridge, clients, redis_client
):
    web = start_web(env, tmp_path, processes, "web-short", STREAMBRIDGE_REQUEST_TIMEOUT_S="2")
    client = open_socket(clients, web, web.login("alice"))
    time.sleep(3)  # past the deadline of the request that became this WebSocket
    assert client.sio.connected
    redis_client.xadd("events", {"channel": "message", "body": '"still here"'})
    [(_, body, _)] = client.wait_for(1, "message")
    assert body == "still here"
    assert not web.log_events("web.request_timeout")
    assert web.log_events("web.request_timeout_below_long_poll")  # the operator is told


def test_an_engineio_session_that_never_connects_is_closed(
    env, tmp_path, processes, clients, bridge, redis_client
):
    web = start_web(env, tmp_path, processes, "web-unjoined", STREAMBRIDGE_CONNECT_TIMEOUT_S="1")
    member = open_socket(clients, web, web.login("alice"))
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{web.port}{SOCKETIO_PATH}/?EIO=4&transport=websocket", timeout=10
    )
    try:
        opened = time.monotonic()
        assert ws.recv().startswith("0{")  # the Engine.IO handshake; no Socket.IO CONNECT
        frames = []
        with contextlib.suppress(websocket.WebSocketConnectionClosedException):
            while True:
                frame = ws.recv()
                if not frame:
                    break
                frames.append(frame)
        held = time.monotonic() - opened
    finally:
        ws.shutdown()  # close() leaves the socket open once the server has closed it
    assert frames == ["1"]  # CLOSE, and nothing else
    assert held < 6, f"an anonymous session was held {held:.1f}s"
    assert web.log_events("socket.never_connected")
    redis_client.xadd("events", {"channel": "message", "body": '"members stay"'})
    member.wait_for(1, "message")
    assert member.sio.connected
