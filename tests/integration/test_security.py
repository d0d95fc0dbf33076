"""Security properties against real processes: a real redis-server, real `streambridge web`
and `bridge` subprocesses, real HTTP and Socket.IO clients.

Each test is an attack (or a guard rail) seen from the outside: cross-site sockets,
cross-site posts, stolen or stale cookies, floods, oversize input, garbage on the
Socket.IO queue, a password-protected Redis.
"""

from __future__ import annotations

import html
import json
import pickle
import random
import re
import time
from pathlib import Path

import pytest
import redis
import requests
import socketio
from redis.backoff import NoBackoff
from redis.retry import Retry

from streambridge.embedded_redis import RedisServer
from tests.support import (
    PASSWORDS,
    RECOVERY,
    Bridge,
    Client,
    Web,
    all_published,
    clean_env,
    csrf_token,
    open_socket,
    start_together,
    start_web,
    wait_until,
)

pytestmark = pytest.mark.integration

EVIL = "https://evil.example"
OK_ORIGIN = "https://ok.example"
LOGIN_KEYS = "streambridge:login:*"
QUEUE = "flask-socketio"
REDIS_PASSWORD = "s3cret-redis-pw"


# -- helpers -----------------------------------------------------------------------------


def refused(clients, web: Web, session: requests.Session | None, **kwargs) -> Client:
    """Connect and expect the server to refuse; returns the (unconnected) client."""
    client = Client()
    clients.append(client)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(web, session, **kwargs)
    assert not client.sio.connected
    return client


def cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def session_from_cookie(header: str) -> requests.Session:
    """A fresh requests session that sends exactly this (captured) Cookie header."""
    session = requests.Session()
    for part in header.split("; "):
        name, _, value = part.partition("=")
        session.cookies.set(name, value)
    return session


def form_login(web: Web, session: requests.Session, user: str):
    """Log in with the form in an existing session (keeps whatever cookie it had)."""
    form = session.get(web.url + "/login", timeout=5).text
    return session.post(
        web.url + "/login",
        data={"username": user, "password": PASSWORDS[user], "csrf_token": csrf_token(form)},
        allow_redirects=False,
        timeout=5,
    )


def cookie_attributes(set_cookie: str) -> set[str]:
    """The attribute names/flags of one Set-Cookie header, lower case."""
    return {part.strip().split("=", 1)[0].lower() for part in set_cookie.split(";")[1:]}


def is_logged_in(web: Web, cookie: str) -> bool:
    response = requests.get(
        web.url + "/", headers={"Cookie": cookie}, allow_redirects=False, timeout=5
    )
    if response.status_code == 302:
        assert response.headers["Location"] == "/login"
        return False
    assert response.status_code == 200
    return True


def stream_len(redis_client, key: str = "events") -> int:
    return redis_client.xlen(key) if redis_client.exists(key) else 0


# -- 1. cross-site WebSocket hijacking ---------------------------------------------------


def test_socket_from_another_origin_is_refused_even_with_a_valid_session(web, clients):
    session = web.login("alice")
    others = [
        EVIL,
        "null",  # sandboxed iframes, file:// pages
        f"http://127.0.0.1:{web.port + 1}",  # same host, other port: another origin
        web.url + ".evil.example",  # own origin as a prefix
        "https" + web.url.removeprefix("http"),  # own host, other scheme
    ]
    for origin in others:
        refused(clients, web, session, origin=origin)
    web.wait_log('"socket.origin_refused"')
    assert web.output().count('"socket.origin_refused"') == len(others)

    # The same cookie from the app's own origin works: it is the Origin that was refused.
    own = open_socket(clients, web, session, origin=web.url)
    assert own.sio.connected


def test_allowed_origins_admit_exactly_the_listed_ones(env, tmp_path, processes, clients):
    web = start_web(env, tmp_path, processes, "web-origins", STREAMBRIDGE_ALLOWED_ORIGINS=OK_ORIGIN)
    session = web.login("alice")
    assert open_socket(clients, web, session, origin=OK_ORIGIN).sio.connected
    assert open_socket(clients, web, session, origin=web.url).sio.connected  # own still fine
    refused(clients, web, session, origin=EVIL)
    refused(clients, web, session, origin=OK_ORIGIN + ".evil.example")
    # An allowed origin is not a login: without a session the socket is still refused.
    nobody = refused(clients, web, None, origin=OK_ORIGIN)
    assert nobody.connect_errors == [{"message": "not logged in"}]


# -- 2. CSRF -----------------------------------------------------------------------------


def test_pages_carry_csrf_tokens(web):
    login_page = requests.get(web.url + "/login", timeout=5).text
    assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]+"', login_page)
    index = web.login("alice").get(web.url + "/", timeout=5).text
    assert re.search(r'<meta name="csrf-token" content="[^"]+"', index)


def test_login_without_csrf_token_is_400_and_starts_no_session(web, redis_client):
    session = requests.Session()
    session.get(web.url + "/login", timeout=5)
    response = session.post(
        web.url + "/login",
        data={"username": "alice", "password": PASSWORDS["alice"]},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 400
    assert "CSRF" in html.unescape(response.text)
    assert redis_client.keys(LOGIN_KEYS) == []
    assert not is_logged_in(web, cookie_header(session))


def test_api_post_needs_the_csrf_token(web, redis_client):
    session = web.login("alice")
    token = session.headers.pop("X-CSRFToken")
    event = {"channel": "message", "body": "forged"}
    attempts = [
        {},  # the page's own origin, no token
        {"Origin": EVIL},  # another site's form or fetch
        {"Origin": EVIL, "X-CSRFToken": "not-the-token"},
        {"X-CSRFToken": token + "x"},
    ]
    for headers in attempts:
        response = session.post(web.url + "/api/", json=event, headers=headers, timeout=5)
        assert response.status_code == 400, (headers, response.text)
        reply = response.json()
        assert reply["status"] is False
        assert "CSRF" in reply["error"]
    assert stream_len(redis_client) == 0

    ok = session.post(web.url + "/api/", json=event, headers={"X-CSRFToken": token}, timeout=5)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] is True
    assert [f["body"] for _, f in redis_client.xrange("events")] == ['"forged"']


def test_anonymous_api_post_is_401_before_the_csrf_check(web, redis_client):
    for headers in ({}, {"Origin": EVIL}, {"X-CSRFToken": "whatever"}):
        response = requests.post(
            web.url + "/api/",
            json={"channel": "message", "body": 1},
            headers=headers,
            timeout=5,
        )
        assert response.status_code == 401
        assert response.json() == {"status": False, "error": "login required"}
    assert stream_len(redis_client) == 0


# -- 3. the session cookie ---------------------------------------------------------------


def test_session_cookie_is_httponly_lax_and_not_secure_over_http(web):
    session = requests.Session()
    response = form_login(web, session, "alice")
    assert response.status_code == 302
    flags = cookie_attributes(response.headers["Set-Cookie"])
    assert {"httponly", "samesite"} <= flags
    assert "samesite=lax" in response.headers["Set-Cookie"].lower()
    assert "secure" not in flags  # a Secure cookie would never come back over http


def test_session_cookie_is_secure_behind_a_trusted_https_proxy(
    env, tmp_path, processes, web
):  # fmt: skip
    proxied = start_web(env, tmp_path, processes, "web-proxied", STREAMBRIDGE_TRUSTED_PROXIES="1")
    https = {
        "X-Forwarded-Proto": "https",
        # Over https Flask-WTF also checks the Referer (same origin) of every form post.
        "Referer": f"https://127.0.0.1:{proxied.port}/login",
    }
    # A browser would not send a Secure cookie over http, so carry it by hand.
    page = requests.get(proxied.url + "/login", headers=https, timeout=5)
    assert "secure" in cookie_attributes(page.headers["Set-Cookie"])
    response = requests.post(
        proxied.url + "/login",
        data={
            "username": "alice",
            "password": PASSWORDS["alice"],
            "csrf_token": csrf_token(page.text),
        },
        headers={**https, "Cookie": f"session={page.cookies['session']}"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302, response.text
    flags = cookie_attributes(response.headers["Set-Cookie"])
    assert {"secure", "httponly", "samesite"} <= flags

    # X-Forwarded-Proto from a client that no trusted proxy stands behind changes nothing.
    spoofed = requests.get(web.url + "/login", headers={"X-Forwarded-Proto": "https"}, timeout=5)
    assert "secure" not in cookie_attributes(spoofed.headers["Set-Cookie"])


def test_login_replaces_the_cookie_and_ends_the_previous_login(web, redis_client, clients):
    session = requests.Session()
    session.get(web.url + "/login", timeout=5)
    before_login = cookie_header(session)  # what a fixation attacker would plant
    assert form_login(web, session, "alice").status_code == 302
    first_login = cookie_header(session)
    assert first_login != before_login
    assert not is_logged_in(web, before_login)
    assert is_logged_in(web, first_login)
    assert len(redis_client.keys(LOGIN_KEYS)) == 1

    # Logging in again in the same browser makes a new login and ends the old one.
    assert form_login(web, session, "alice").status_code == 302
    second_login = cookie_header(session)
    assert second_login not in (before_login, first_login)
    assert len(redis_client.keys(LOGIN_KEYS)) == 1
    assert not is_logged_in(web, first_login)
    assert is_logged_in(web, second_login)
    refused(clients, web, session_from_cookie(first_login))
    assert open_socket(clients, web, session).sio.connected


def test_a_cookie_captured_before_logout_is_worthless_after_it(web, redis_client, clients):
    session = web.login("alice")
    stolen = cookie_header(session)
    assert is_logged_in(web, stolen)
    response = session.post(web.url + "/logout", allow_redirects=False, timeout=5)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert redis_client.keys(LOGIN_KEYS) == []
    assert not is_logged_in(web, stolen)
    attempt = refused(clients, web, session_from_cookie(stolen), origin=web.url)
    assert attempt.connect_errors == [{"message": "not logged in"}]


# -- 4. rate limits ----------------------------------------------------------------------


def test_login_attempts_are_rate_limited(env, tmp_path, processes):
    web = start_web(
        env, tmp_path, processes, "web-login-limit", STREAMBRIDGE_LOGIN_RATE_LIMIT="3 per minute"
    )
    session = requests.Session()
    token = csrf_token(session.get(web.url + "/login", timeout=5).text)

    def attempt(password: str) -> requests.Response:
        return session.post(
            web.url + "/login",
            data={"username": "alice", "password": password, "csrf_token": token},
            allow_redirects=False,
            timeout=5,
        )

    assert [attempt("guess").status_code for _ in range(3)] == [401, 401, 401]
    limited = attempt("guess")
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # Once limited, even the right password waits: guessing cannot go on.
    assert attempt(PASSWORDS["alice"]).status_code == 429
    # The form itself (GET) is not limited.
    assert session.get(web.url + "/login", timeout=5).status_code == 200


def test_api_posts_are_rate_limited_per_user(env, tmp_path, processes, redis_client):
    web = start_web(
        env, tmp_path, processes, "web-api-limit", STREAMBRIDGE_API_RATE_LIMIT="5 per minute"
    )
    alice = web.login("alice")

    def post(session: requests.Session, n: int) -> requests.Response:
        return session.post(web.url + "/api/", json={"channel": "m", "body": n}, timeout=5)

    assert [post(alice, n).status_code for n in range(5)] == [200] * 5
    limited = post(alice, 5)
    assert limited.status_code == 429
    assert limited.headers["Content-Type"].startswith("application/json")
    reply = limited.json()
    assert reply["status"] is False
    assert "too many requests" in reply["error"]
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert stream_len(redis_client) == 5
    # The limit is per user: a second login of alice does not get a fresh quota...
    assert post(web.login("alice"), 6).status_code == 429
    # ...and another user is not locked out by alice's flood.
    assert post(web.login("bob"), 99).status_code == 200


# -- 5. size limits ----------------------------------------------------------------------


def test_api_request_over_max_request_bytes_is_413(env, tmp_path, processes, redis_client):
    web = start_web(env, tmp_path, processes, "web-small", STREAMBRIDGE_MAX_REQUEST_BYTES="2048")
    session = web.login("alice")
    small = session.post(web.url + "/api/", json={"channel": "m", "body": "a" * 1500}, timeout=5)
    assert small.status_code == 200, small.text
    big = session.post(web.url + "/api/", json={"channel": "m", "body": "a" * 3000}, timeout=5)
    assert big.status_code == 413
    assert stream_len(redis_client) == 1


def test_entry_over_max_body_bytes_goes_to_dead_letters(
    env, tmp_path, processes, web, clients, redis_client
):
    bridge = Bridge(dict(env, STREAMBRIDGE_MAX_BODY_BYTES="100"), tmp_path, name="bridge-small")
    processes.append(bridge)
    bridge.start()
    alice = open_socket(clients, web, web.login("alice"))
    big = redis_client.xadd("events", {"channel": "message", "body": json.dumps("a" * 200)})
    ok = redis_client.xadd("events", {"channel": "message", "body": '"small"'})
    alice.wait_for(1, "message")
    wait_until(lambda: stream_len(redis_client, "events:dead") == 1, 10, "the dead letter")
    [(_, dead)] = redis_client.xrange("events:dead")
    assert dead["original_id"] == big
    assert "more than the limit of 100" in dead["reason"]
    assert alice.ids("message") == [ok]
    assert redis_client.xpending("events", "bridge")["pending"] == 0
    assert bridge.alive()


def test_non_utf8_entry_goes_to_dead_letters(web, bridge, clients, redis_server, redis_client):
    alice = open_socket(clients, web, web.login("alice"))
    raw = redis.Redis.from_url(redis_server.url)  # bytes in, bytes out
    try:
        bad = raw.xadd("events", {b"channel": b"message", b"body": b'"\xff\xfe"'}).decode()
    finally:
        raw.close()
    ok = redis_client.xadd("events", {"channel": "message", "body": '"after"'})
    alice.wait_for(1, "message", timeout=5)
    assert alice.ids("message") == [ok]
    wait_until(lambda: stream_len(redis_client, "events:dead") == 1, 5, "the dead letter")
    raw = redis.Redis.from_url(redis_server.url)
    try:
        [(_, dead)] = raw.xrange("events:dead")
    finally:
        raw.close()
    assert dead[b"original_id"].decode() == bad
    assert dead[b"body"] == b'"\xff\xfe"'  # kept byte for byte
    assert bridge.alive()


def test_oversize_socketio_message_closes_only_that_connection(
    env, tmp_path, processes, clients
):  # fmt: skip
    web = start_web(env, tmp_path, processes, "web-small", STREAMBRIDGE_MAX_REQUEST_BYTES="2048")
    bystander = open_socket(clients, web, web.login("bob"))
    sender = open_socket(clients, web, web.login("alice"))
    sender.sio.emit("message", "a" * 10_000)
    wait_until(lambda: not sender.sio.connected, 5, "the oversize sender to be disconnected")
    assert web.alive()
    assert requests.get(web.url + "/healthz", timeout=5).status_code == 200
    assert bystander.sio.connected
    # The server still takes new connections, and normal-sized messages are fine.
    again = open_socket(clients, web, web.login("alice"))
    again.sio.emit("message", "a" * 100)
    assert again.sio.connected


# -- 6. logout and expiry close sockets --------------------------------------------------


def disconnect_times(client: Client) -> list[float]:
    times: list[float] = []
    client.sio.on("disconnect", lambda *_: times.append(time.monotonic()))
    return times


def test_logout_disconnects_that_logins_sockets_within_a_second(web, bridge, clients, redis_client):
    first = web.login("alice")
    second = web.login("alice")  # another browser: a separate login of the same user
    same1 = open_socket(clients, web, first)
    same2 = open_socket(clients, web, first)
    other = open_socket(clients, web, second)
    closed = [disconnect_times(same1), disconnect_times(same2)]

    logged_out_at = time.monotonic()
    assert first.post(web.url + "/logout", allow_redirects=False, timeout=5).status_code == 302
    wait_until(lambda: all(closed), 3, "both sockets of the ended login to close")
    elapsed = max(t[0] for t in closed) - logged_out_at
    assert elapsed < 1.0, f"sockets closed {elapsed:.2f}s after logout"
    assert not same1.sio.connected
    assert not same2.sio.connected

    # The other login's socket is still connected and still gets events.
    redis_client.xadd("events", {"channel": "message", "body": '"still here"'})
    other.wait_for(1, "message")
    assert other.sio.connected
    assert other.bodies() == ["still here"]
    assert web.output().count('"socket.login_ended"') == 2


def test_expired_login_closes_its_socket(web, clients, redis_client):
    keep = web.login("bob")
    before = set(redis_client.keys(LOGIN_KEYS))
    session = web.login("alice")
    [key] = set(redis_client.keys(LOGIN_KEYS)) - before
    assert redis_client.get(key) == "alice"
    expiring = open_socket(clients, web, session)
    staying = open_socket(clients, web, keep)
    closed = disconnect_times(expiring)

    expires_at = time.monotonic() + 1.0
    assert redis_client.pexpire(key, 1000)
    wait_until(lambda: closed, 4, "the expired login's socket to close")
    late = closed[0] - expires_at
    assert late < 1.0, f"socket closed {late:.2f}s after its login expired"
    assert not is_logged_in(web, cookie_header(session))
    assert staying.sio.connected


# -- 7. authorization: rooms -------------------------------------------------------------


def test_a_client_cannot_join_another_users_room(web, bridge, clients, redis_client):
    alice = open_socket(clients, web, web.login("alice"))
    bob = open_socket(clients, web, web.login("bob"))
    for event in ("join", "join_room", "enter_room", "subscribe", "room"):
        alice.sio.emit(event, "user:bob")
        alice.sio.emit(event, {"room": "user:bob"})
    secret = redis_client.xadd(
        "events", {"channel": "message", "body": '"secret"', "room": "user:bob"}
    )
    redis_client.xadd("events", {"channel": "message", "body": '"for all"'})
    assert [b for _, b, _ in bob.wait_for(2, "message")] == ["secret", "for all"]
    [(_, _, meta)] = alice.wait_for(1, "message")
    assert alice.bodies() == ["for all"]  # the broadcast came after bob's event
    alice.close()

    # Replay: asking for bob's room (or to be bob) in the auth data changes nothing.
    redis_client.xadd("events", {"channel": "message", "body": '"secret 2"', "room": "user:bob"})
    redis_client.xadd("events", {"channel": "message", "body": '"for all 2"'})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    auth = {"last_id": meta["id"], "epoch": meta["epoch"], "user": "bob", "rooms": ["user:bob"]}
    again = open_socket(clients, web, web.login("alice"), auth=auth)
    [(_, info, _)] = again.wait_for(1, RECOVERY)
    assert info["recovered"] is True
    assert info["replayed"] == 1  # of the two entries after last_id, only the broadcast
    assert again.bodies() == ["for all 2"]
    assert secret not in again.ids()


# -- 8. garbage on the Socket.IO queue ----------------------------------------------------


class _Planted:
    """Unpickling this creates ``path``: proof that someone unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_garbage_on_the_queue_channel_is_ignored_and_never_unpickled(
    web, bridge, clients, redis_client, tmp_path
):
    alice = open_socket(clients, web, web.login("alice"))
    alice.wait_for(1, RECOVERY)  # caught up: anything added from now on is live
    planted = tmp_path / "unpickled-by-the-web-server"
    bad_meta = {"streambridge": 1, "id": "not-a-stream-id", "epoch": "e"}
    garbage = [
        pickle.dumps(
            {"method": "emit", "event": "message", "data": _Planted(planted), "namespace": "/"}
        ),
        random.Random(20240607).randbytes(512),
        b'{"method": "emit", "event": ',
        b"[1, 2, 3]",
        b'"just text"',
        b"null",
        json.dumps({"method": "emit"}).encode(),
        json.dumps({"method": "emit", "event": "message"}).encode(),
        json.dumps({"method": "emit", "data": ["x"]}).encode(),
        json.dumps({"method": "emit", "event": "message", "data": "x", "binary": True}).encode(),
        json.dumps(
            {"method": "emit", "event": "message", "data": ["x", bad_meta], "room": None}
        ).encode(),
        json.dumps({"method": "nonsense", "host_id": "x"}).encode(),
        json.dumps({"method": "callback", "host_id": None}).encode(),
    ]
    for payload in garbage:
        redis_client.publish(QUEUE, payload)
    real = redis_client.xadd("events", {"channel": "message", "body": '"real"'})

    alice.wait_for(1, "message")
    assert alice.ids("message") == [real]
    assert alice.bodies() == ["real"]
    assert not planted.exists()
    assert web.alive()
    assert requests.get(web.url + "/readyz", timeout=5).status_code == 200
    web.wait_log('"queue.bad_stream_id"')
    log = web.output()
    assert "Unexpected Error in pubsub" not in log
    assert "listen() exited" not in log
    assert log.count('"queue.subscribed"') == 1  # the listener never had to start over


# JSON that is not an object but contains "method" (or is a number/boolean): python-socketio
# evaluates `'method' in data` and `data['method']` outside its handler's try.
TRIPPING_JSON = [b"42", b"true", b'"method"', b'["method"]']


def test_json_that_trips_the_queue_listener_does_not_stop_delivery(
    web, bridge, clients, redis_client
):
    alice = open_socket(clients, web, web.login("alice"))
    # One event first, so that alice has a position in the stream to be resynced from
    # (see test_a_pubsub_gap_before_a_clients_first_event_is_recovered).
    first = redis_client.xadd("events", {"channel": "message", "body": '"first"'})
    alice.wait_for(1, "message")
    for payload in TRIPPING_JSON:
        redis_client.publish(QUEUE, payload)
    real = redis_client.xadd("events", {"channel": "message", "body": '"real"'})
    alice.wait_for(2, "message")
    assert alice.ids("message") == [first, real]
    assert all(info["recovered"] for _, info, _ in alice.received(RECOVERY))
    assert web.alive()
    assert requests.get(web.url + "/readyz", timeout=5).status_code == 200
    assert "listen() exited" not in web.output()


def test_json_that_is_not_an_object_is_ignored_without_a_resubscribe(
    web, bridge, clients, redis_client
):
    alice = open_socket(clients, web, web.login("alice"))
    redis_client.xadd("events", {"channel": "message", "body": '"first"'})
    alice.wait_for(1, "message")
    for payload in TRIPPING_JSON:
        redis_client.publish(QUEUE, payload)
    redis_client.xadd("events", {"channel": "message", "body": '"real"'})
    alice.wait_for(2, "message")
    log = web.output()
    assert "Unexpected Error in pubsub" not in log
    assert log.count('"queue.subscribed"') == 1


def test_a_pubsub_gap_before_a_clients_first_event_is_recovered(web, bridge, clients, redis_client):
    alice = open_socket(clients, web, web.login("alice"))
    alice.wait_for(1, RECOVERY)  # the stream was empty: alice is live from 0-0
    redis_client.xadd("events", {"channel": "message", "body": '"bob only"', "room": "user:bob"})
    wait_until(lambda: all_published(redis_client), 10, "acked")
    assert redis_client.client_kill_filter(_type="pubsub") >= 1  # the web server's queue
    wait_until(lambda: web.output().count('"catchup.done"') >= 2, 10, "the resync")
    later = redis_client.xadd("events", {"channel": "message", "body": '"later"'})
    alice.wait_for(1, "message")
    assert alice.ids("message") == [later]
    assert [info["recovered"] for _, info, _ in alice.received(RECOVERY)] == [True]


# -- 9. Redis with a password ------------------------------------------------------------


@pytest.fixture
def auth_redis(tmp_path):
    server = RedisServer(tmp_path / "redis-auth", extra_args=["--requirepass", REDIS_PASSWORD])
    server.start()
    yield server
    server.stop()


def test_password_protected_redis_end_to_end(auth_redis, users_file, tmp_path, processes, clients):
    # The password is really required. (Asked once: redis-py retries a refusal with
    # backoff by default, seconds of it, as if the server were unreachable.)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=auth_redis.port, retry=Retry(NoBackoff(), 0)).ping()
    env = clean_env(
        REDIS_URL=auth_redis.url,
        STREAMBRIDGE_USERS_FILE=str(users_file),
        STREAMBRIDGE_SECRET_KEY="x" * 40,
    )
    web = Web(env, tmp_path, name="web-auth")
    bridge = Bridge(env, tmp_path, name="bridge-auth")
    processes.extend([web, bridge])
    start_together(web, bridge)
    alice = open_socket(clients, web, web.login("alice"))
    client = auth_redis.client()
    try:
        stream_id = client.xadd("events", {"channel": "message", "body": '"through auth"'})
    finally:
        client.close()
    [(_, body, meta)] = alice.wait_for(1, "message")
    assert (body, meta["entry"]) == ("through auth", stream_id)
    for proc in (web, bridge):
        assert REDIS_PASSWORD not in proc.output()  # never logged


def test_bridge_with_a_wrong_redis_password_retries_and_stays_alive(
    auth_redis, tmp_path, processes
):
    wrong = auth_redis.url.replace(REDIS_PASSWORD, "wrong-password")
    bridge = Bridge(clean_env(REDIS_URL=wrong), tmp_path, name="bridge-wrong-pw")
    processes.append(bridge)
    bridge.start(wait=False)
    bridge.wait_log('"bridge.redis_unavailable"')
    # It keeps retrying (backing off), instead of exiting.
    wait_until(
        lambda: bridge.output().count('"bridge.redis_unavailable"') >= 3 or not bridge.alive(),
        10,
        "three retries",
    )
    assert bridge.alive(), bridge.output()[-2000:]
    assert '"bridge.ready"' not in bridge.output()
    assert "wrong-password" not in bridge.output()
