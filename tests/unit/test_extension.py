"""The StreamBridge extension, register_ws and the migration helpers (fakeredis)."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest
from flask import Flask, current_app
from streambridge.webapp.ext.compat import register_ws
from streambridge.webapp.ext.extension import PublishRefused, StreamBridge, state
from streambridge.webapp.ext.identity import Viewer

import streambridge
from streambridge.contract import ContractError
from streambridge.publisher import emit_event
from streambridge.settings import WebSettings


@pytest.fixture
def fake():
    return fakeredis.FakeRedis(decode_responses=True)


def make_app(**config):
    app = Flask(__name__)
    app.config.update(SECRET_KEY="s" * 40, STREAMBRIDGE_ASYNC_MODE="threading", **config)
    return app


def test_settings_come_from_app_config_then_options(fake):
    app = make_app(REDIS_URL="redis://cfg:1/0", STREAMBRIDGE_STREAM="jobs", STREAMBRIDGE_MAXLEN=7)
    StreamBridge(app, redis_client=fake, maxlen=9)
    settings = state(app).settings
    assert (settings.redis_url, settings.stream, settings.maxlen) == ("redis://cfg:1/0", "jobs", 9)
    assert settings.socketio_path == WebSettings.model_fields["socketio_path"].default


def test_init_app_later_and_publish_from_the_host(fake):
    app = make_app()
    ext = StreamBridge(redis_client=fake)
    ext.init_app(app)
    with app.app_context():
        stream_id = ext.publish("message", {"n": 1}, room="user:alice")
    [(entry_id, fields)] = fake.xrange("events")
    assert entry_id == stream_id
    assert fields == {"channel": "message", "body": '{"n":1}', "room": "user:alice"}


def test_user_and_rooms_loaders_decide_the_viewer(fake):
    app = make_app()
    ext = StreamBridge(app, redis_client=fake)
    ext.user_loader(lambda: "alice")
    ext.rooms_loader(lambda name: ["team:blue"] if name == "alice" else [])
    viewer = ext.current_viewer()
    assert viewer == Viewer("alice", frozenset({"team:blue"}))
    assert viewer.all_rooms == ["user:alice", "team:blue"]
    assert viewer.may_receive(None) and viewer.may_receive("team:blue")
    assert not viewer.may_receive("user:bob")
    ext.user_loader(lambda: None)
    assert ext.current_viewer() is None


def test_default_user_loader_is_flask_login(fake):
    flask_login = pytest.importorskip("flask_login")
    app = make_app()
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        id = "carol"

    manager.user_loader(lambda user_id: User() if user_id == "carol" else None)
    ext = StreamBridge(app, redis_client=fake)
    with app.test_request_context():
        assert ext.current_viewer() is None
        flask_login.login_user(User())
        assert ext.current_viewer() == Viewer("carol", frozenset())


def test_client_script_route(fake):
    app = make_app()
    StreamBridge(app, redis_client=fake)
    response = app.test_client().get("/streambridge.js")
    assert response.status_code == 200
    assert b"StreamBridge" in response.data


def test_register_ws_builds_the_url_and_path():
    app = make_app()
    ext = register_ws(app, socketio_path="/live/socket.io", redis_host="h", redis_port=7000)
    settings = state(app).settings
    assert settings.redis_url == "redis://h:7000/0"
    assert settings.socketio_path == "/live/socket.io"
    assert isinstance(ext, StreamBridge)


def test_configure_and_emit_event_append_to_the_stream(fake, monkeypatch):
    monkeypatch.setattr("streambridge.publisher._default", None)  # restored after the test
    publisher = streambridge.configure(client=fake, stream="migrated", maxlen=100)
    stream_id = emit_event("message", "backup done")
    assert fake.xrange("migrated") == [(stream_id, {"channel": "message", "body": '"backup done"'})]
    assert publisher.settings.maxlen == 100


# -- publishing on behalf of a user --------------------------------------------------------


def test_publish_as_allows_where_the_user_may_receive_by_default(fake):
    app = make_app()
    ext = StreamBridge(app, redis_client=fake)
    ext.rooms_loader(lambda name: ["team:blue"] if name == "alice" else [])
    with app.app_context():
        ids = [ext.publish_as("alice", "m", 1, room) for room in (None, "user:alice", "team:blue")]
        for room in ("user:bob", "team:red"):
            with pytest.raises(PublishRefused, match=f"alice may not publish to room '{room}'"):
                ext.publish_as("alice", "m", 1, room)
    entries = fake.xrange("events")
    assert [i for i, _ in entries] == ids
    assert all(fields["from"] == "alice" for _, fields in entries)


def test_authorize_publish_hook_decides_and_fails_closed(fake):
    app = make_app()
    ext = StreamBridge(app, redis_client=fake)
    calls = []

    @ext.authorize_publish
    def only_own_room(user_id, room):
        calls.append((user_id, room))
        if room == "explode":
            raise RuntimeError("hook bug")
        if room == "truthy":
            return "yes"  # not True: refused
        return room == f"user:{user_id}"

    with app.app_context():
        assert ext.publish_as("bob", "m", 1, "user:bob")
        for room in (None, "user:alice", "explode", "truthy"):
            with pytest.raises(PublishRefused):
                ext.publish_as("bob", "m", 1, room)
    assert calls == [("bob", r) for r in ("user:bob", None, "user:alice", "explode", "truthy")]
    assert fake.xlen("events") == 1


def test_publish_as_refuses_reserved_channels_before_the_hook(fake):
    app = make_app()
    ext = StreamBridge(app, redis_client=fake)
    ext.authorize_publish(lambda user_id, room: True)
    with app.app_context(), pytest.raises(ContractError, match="is reserved"):
        ext.publish_as("alice", "disconnect", 1)
    assert not fake.exists("events")


def test_admin_hook_runs_in_the_app_context_with_a_time_limit_for_the_sampler(fake):
    app = make_app(ADMINS=["alice"], STREAMBRIDGE_AUTHORIZE_TIMEOUT_S=0.3)
    ext = StreamBridge(app, redis_client=fake)
    slow = threading.Event()

    @ext.authorize_admin
    def admins(user_id):
        if slow.is_set():
            time.sleep(5)
        return user_id in current_app.config["ADMINS"]  # needs the app's context

    is_admin = state(app).dashboard.is_admin  # as the sampler calls it: no request
    assert is_admin(Viewer("alice", frozenset())) is True
    assert is_admin(Viewer("bob", frozenset())) is False
    slow.set()
    started = time.monotonic()
    assert is_admin(Viewer("alice", frozenset())) is False  # too late counts as no
    assert time.monotonic() - started < 2
