"""The web app over HTTP (Flask test client; Redis is fakeredis): login, /api/, pages."""

from __future__ import annotations

import json

import pytest
from streambridge.webapp.app import MIN_SECRET_KEY_CHARS, ConfigError, create_app
from streambridge.webapp.ext.extension import state
from werkzeug.security import generate_password_hash

from streambridge.settings import WebSettings

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
SECRET = "x" * 40


def write_users(path, passwords: dict[str, str]) -> None:
    # Cheap hashes: the default scrypt costs ~0.1 s each.
    path.write_text(
        json.dumps(
            {
                n: generate_password_hash(p, method="pbkdf2:sha256:1000")
                for n, p in passwords.items()
            }
        )
    )


def settings(tmp_path, **overrides) -> WebSettings:
    values = {
        "redis_url": "redis://unused.invalid:1/0",
        "users_file": str(tmp_path / "users.json"),
        "secret_key": SECRET,
        "async_mode": "threading",
    }
    values.update(overrides)
    return WebSettings(**values)


NO_CSRF = {"WTF_CSRF_ENABLED": False}


@pytest.fixture
def app(tmp_path, fake):
    write_users(tmp_path / "users.json", PASSWORDS)
    # CSRF has integration tests of its own (tests/integration/test_security.py).
    return create_app(settings(tmp_path), NO_CSRF, redis_client=fake)


@pytest.fixture
def client(app):
    return app.test_client()


def login(client, name: str = "alice", password: str | None = None):
    password = PASSWORDS[name] if password is None else password
    return client.post("/login", data={"username": name, "password": password})


def session_user(client):
    """The user of the client's login, if the login is alive."""
    with client.session_transaction() as session:
        login_id = session.get("login")
    if login_id is None:
        return None
    return client.application.extensions["streambridge.logins"].user_of(login_id)


# -- pages and login ---------------------------------------------------------------------


def test_index_redirects_anonymous_users_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"


def test_login_page_is_a_form(client):
    response = client.get("/login")
    assert response.status_code == 200
    assert b'name="username"' in response.data
    assert b'name="password"' in response.data
    assert b"Wrong user name or password" not in response.data


@pytest.mark.parametrize(
    ("name", "password"), [("alice", "wrong-password"), ("alice", ""), ("mallory", "x")]
)
def test_bad_login_is_401_with_an_error_and_no_session(client, name, password):
    response = login(client, name, password)
    assert response.status_code == 401
    assert b"Wrong user name or password." in response.data
    assert session_user(client) is None


def test_good_login_redirects_and_sets_the_session(client):
    response = login(client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert session_user(client) == "alice"
    page = client.get("/")
    assert page.status_code == 200
    assert b"alice" in page.data
    assert b'data-socketio-path="/ws/socket.io"' in page.data


def test_login_starts_a_fresh_session(client):
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    login(client)
    with client.session_transaction() as session:
        assert set(session) == {"login", "_permanent"}  # nothing planted survives
    assert session_user(client) == "alice"


def test_a_second_login_ends_the_first(client):
    login(client)
    with client.session_transaction() as session:
        first = session["login"]
    login(client)
    logins = client.application.extensions["streambridge.logins"]
    assert logins.user_of(first) is None


def test_session_cookie_is_httponly_and_samesite_lax(client):
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_logout_is_post_only(client):
    login(client)
    assert client.get("/logout").status_code == 405  # a link elsewhere cannot log you out
    assert session_user(client) == "alice"


def test_logout_clears_the_session(client):
    login(client)
    response = client.post("/logout")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert session_user(client) is None
    assert client.get("/").status_code == 302


def test_a_user_removed_from_the_file_is_logged_out(client, tmp_path):
    login(client)
    write_users(tmp_path / "users.json", {"bob": PASSWORDS["bob"]})  # a different size
    assert client.get("/").status_code == 302
    assert client.post("/api/", json={"channel": "m", "body": 1}).status_code == 401


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


# -- POST /api/ --------------------------------------------------------------------------


def test_api_refuses_anonymous_callers_before_anything_else(client, fake):
    response = client.post("/api/", json={"channel": "message", "body": "hi"})
    assert response.status_code == 401
    assert response.get_json() == {"status": False, "error": "login required"}
    # Not JSON either: still 401, an anonymous caller learns nothing about the rules.
    assert client.post("/api/", data="x", content_type="text/plain").status_code == 401
    assert not fake.exists("events")


def test_api_appends_the_event_and_returns_its_id(client, fake):
    login(client)
    response = client.post(
        "/api/", json={"channel": "message", "body": {"text": "hi"}, "room": "user:alice"}
    )
    assert response.status_code == 200
    payload = response.get_json()
    assert payload["status"] is True
    fields = {"channel": "message", "body": '{"text":"hi"}', "room": "user:alice"}
    assert fake.xrange("events") == [(payload["id"], {**fields, "from": "alice"})]


def test_api_ids_follow_stream_order(client, fake):
    login(client)
    ids = [
        client.post("/api/", json={"channel": "m", "body": i}).get_json()["id"] for i in range(3)
    ]
    assert ids == [i for i, _ in fake.xrange("events")]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_api_refuses_bodies_that_are_not_declared_json(client, fake, content_type):
    # A cross-site form can only send these types; JSON needs a CORS preflight.
    login(client)
    response = client.post("/api/", data='{"channel": "m", "body": 1}', content_type=content_type)
    assert response.status_code == 415
    assert response.get_json()["status"] is False
    assert not fake.exists("events")


@pytest.mark.parametrize("data", ["{not json", "", '{"channel": "m", "body": 1'])
def test_api_refuses_invalid_json(client, fake, data):
    login(client)
    response = client.post("/api/", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {"status": False, "error": "request body is not valid JSON"}
    assert not fake.exists("events")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"channel": "bad channel", "body": 1}, "channel: must be 1-64 characters"),
        ({"channel": "m" * 65, "body": 1}, "channel: must be 1-64 characters"),
        ({"channel": "m"}, "channel and body are required"),
        ({"channel": "m", "body": 1, "admin": True}, "unknown field(s): admin"),
        ({"channel": "m", "body": 1, "room": ""}, "room: "),
        ({"channel": "m", "body": 1, "namespace": "nope"}, "namespace: "),
        (["m", 1], "must be an object with channel and body"),
    ],
)
def test_api_names_the_field_that_is_wrong(client, fake, payload, error):
    login(client)
    response = client.post("/api/", json=payload)
    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] is False
    assert body["error"].startswith(error)
    assert not fake.exists("events")


def test_api_refuses_nan_bodies(client, fake):
    login(client)
    response = client.post(
        "/api/", data='{"channel": "m", "body": NaN}', content_type="application/json"
    )
    assert response.status_code == 400
    assert "body cannot be serialized as JSON" in response.get_json()["error"]
    assert not fake.exists("events")


def test_api_applies_the_body_size_limit(tmp_path, fake):
    write_users(tmp_path / "users.json", PASSWORDS)
    app = create_app(settings(tmp_path, max_body_bytes=10), NO_CSRF, redis_client=fake)
    client = app.test_client()
    login(client)
    response = client.post("/api/", json={"channel": "m", "body": "a" * 20})
    assert response.status_code == 400
    assert "more than the limit of 10" in response.get_json()["error"]
    assert not fake.exists("events")


def test_api_refuses_requests_over_max_request_bytes(client, fake):
    login(client)
    big = json.dumps({"channel": "m", "body": "a" * (256 * 1024)})
    response = client.post("/api/", data=big, content_type="application/json")
    assert response.status_code == 413
    assert not fake.exists("events")


def test_api_refuses_a_body_that_cannot_be_utf8(client, fake):
    login(client)
    response = client.post(
        "/api/", data='{"channel": "m", "body": "\\ud800"}', content_type="application/json"
    )
    assert response.status_code == 400


# -- configuration -----------------------------------------------------------------------


def test_secret_key_is_required_outside_dev_mode(tmp_path):
    with pytest.raises(ConfigError, match="STREAMBRIDGE_SECRET_KEY is not set"):
        create_app(settings(tmp_path, secret_key=None))


def test_secret_key_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMBRIDGE_SECRET_KEY", "too-short")
    monkeypatch.setenv("STREAMBRIDGE_ASYNC_MODE", "threading")
    with pytest.raises(ConfigError, match="is 9 characters; use at least 32"):
        create_app()


def test_short_secret_key_is_refused(tmp_path):
    assert MIN_SECRET_KEY_CHARS == 32
    with pytest.raises(ConfigError, match="is 31 characters; use at least 32"):
        create_app(settings(tmp_path, secret_key="k" * 31))
    app = create_app(settings(tmp_path, secret_key="k" * 32))
    assert app.config["SECRET_KEY"] == "k" * 32


def test_dev_mode_makes_up_a_random_secret_key(tmp_path):
    first = create_app(settings(tmp_path, secret_key=None, dev=True))
    second = create_app(settings(tmp_path, secret_key=None, dev=True))
    key = first.config["SECRET_KEY"]
    assert len(key) == 64
    int(key, 16)  # hex
    assert key != second.config["SECRET_KEY"]


def test_dev_mode_keeps_a_given_key(tmp_path):
    app = create_app(settings(tmp_path, secret_key="short", dev=True))
    assert app.config["SECRET_KEY"] == "short"


def test_request_size_limit_comes_from_settings(tmp_path):
    app = create_app(settings(tmp_path, max_request_bytes=4096))
    assert app.config["MAX_CONTENT_LENGTH"] == 4096


def test_login_watcher_closes_strangers_but_not_sockets_still_connecting(app):
    sb = state(app)
    manager = sb.manager
    connecting = manager.pre_connect("eio-connecting", "/")  # its connect handler runs
    stranger = manager.connect(manager.pre_connect("eio-stranger", "/"), "/")
    assert manager.is_connected(stranger, "/")  # connected, yet catch-up never knew it
    sb.logins_alive = lambda login_ids: set(login_ids)
    assert sb.close_ended_logins() == 1
    assert not manager.is_connected(stranger, "/")
    assert [sid for sid, _ in manager.get_participants("/", None)] == [connecting]
    assert manager.is_pre_connected(connecting, "/")
