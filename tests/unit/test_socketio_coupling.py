"""The private parts of python-socketio and python-engineio that webapp/ext relies on.

The queue manager overrides private methods of python-socketio's pub/sub manager and
calls private methods and attributes of both servers; pyproject pins both to the minor
release these were recorded from. A new release that renames one, changes its
signature, or stops calling an overridden method fails here, naming what changed and
which of our code depends on it.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import engineio
import engineio.socket
import pytest
import socketio

ROOT = Path(__file__).resolve().parents[2]

RECORDED_FROM = {"python-socketio": "5.18", "python-engineio": "4.15"}
"""The minor releases the names and signatures below were recorded from."""


@dataclass(frozen=True)
class Method:
    owner: type
    name: str
    signature: str
    where: str  # which of our code depends on it, and how
    called_by: str | None = None  # their method that must still call it by this name

    @property
    def label(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"


METHODS = [
    Method(
        socketio.Server,
        "_send_eio_packet",
        "(self, eio_sid, eio_pkt)",
        "webapp/ext/queue_manager.py StreamQueueManager.send_packets calls it to send "
        "an event encoded once to every recipient",
    ),
    Method(
        socketio.Server,
        "_handle_event",
        "(self, eio_sid, namespace, id, data)",
        "webapp/ext/sockets.py refuse_reserved_events replaces it on the server to close "
        "sockets that send reserved event names",
        called_by="_handle_eio_message",
    ),
    Method(
        socketio.RedisManager,
        "_redis_connect",
        "(self)",
        "webapp/ext/queue_manager.py StreamQueueManager overrides it (the client for "
        "the server's own emits)",
    ),
    Method(
        socketio.RedisManager,
        "_publish",
        "(self, data)",
        "webapp/ext/queue_manager.py StreamQueueManager overrides it (publishes with "
        "the one connect function, SPUBLISH on sharded pub/sub)",
        called_by="emit",
    ),
    Method(
        socketio.RedisManager,
        "_listen",
        "(self)",
        "webapp/ext/queue_manager.py StreamQueueManager overrides it: the queue "
        "listeners' messages, decoded",
        called_by="_thread",
    ),
    Method(
        socketio.PubSubManager,
        "_thread",
        "(self)",
        "webapp/ext/queue_manager.py StreamQueueManager overrides it to start the gap "
        "watch and the shard listeners, then calls it",
        called_by="initialize",
    ),
    Method(
        socketio.PubSubManager,
        "_handle_emit",
        "(self, message)",
        "webapp/ext/queue_manager.py StreamQueueManager overrides it to deliver stream "
        "events through the delivery ledger, and calls it for other emits",
        called_by="_thread",
    ),
    Method(
        engineio.Server,
        "disconnect",
        "(self, sid=None)",
        "webapp/ext/sockets.py disconnect_without_waiting replaces it on the server "
        "with a close that does not wait for a poll",
        called_by="handle_request",
    ),
    Method(
        engineio.Server,
        "get_queue_empty_exception",
        "(self)",
        "webapp/ext/queue_manager.py StreamQueueManager.cut empties a shed client's queue",
    ),
    Method(
        engineio.socket.Socket,
        "close",
        "(self, wait=True, abort=False, reason=None)",
        "webapp/ext/queue_manager.py (cut), sockets.py, extension.py and server.py close "
        "sessions with wait=False (and abort, reason)",
    ),
]

# Callers of an overridden method, checked on the class that defines them.
CALLERS: dict[str, type] = {
    "_handle_eio_message": socketio.Server,
    "initialize": socketio.PubSubManager,
    "emit": socketio.PubSubManager,
    "_thread": socketio.PubSubManager,
    "handle_request": engineio.Server,
}


def _server() -> socketio.Server:
    return socketio.Server(async_mode="threading")


def _engineio_socket() -> engineio.socket.Socket:
    return engineio.socket.Socket(_server().eio, "eio-sid")


def _manager() -> socketio.RedisManager:
    return socketio.RedisManager("redis://localhost:6379/0", channel="c", write_only=True)


@dataclass(frozen=True)
class Attribute:
    make: Callable[[], Any]
    owner: str
    name: str
    where: str


ATTRIBUTES = [
    Attribute(
        _server,
        "socketio.Server",
        "environ",
        "webapp/ext/queue_manager.py StreamQueueManager.cut finds a shed client's raw "
        "socket in it (keyed by Engine.IO sid)",
    ),
    Attribute(
        _server,
        "socketio.Server",
        "packet_class",
        "webapp/ext/queue_manager.py StreamQueueManager.encode builds event packets",
    ),
    Attribute(
        _server,
        "socketio.Server",
        "manager_initialized",
        "webapp/ext/server.py start_queue_listener subscribes before the first request",
    ),
    Attribute(
        lambda: _server().eio,
        "engineio.Server",
        "sockets",
        "webapp/ext/queue_manager.py (backlog, cut), sockets.py, extension.py "
        "(close_unjoined) and server.py read the open sessions from it",
    ),
    Attribute(
        lambda: _server().eio.reason,
        "engineio.Server.reason",
        "SERVER_DISCONNECT",
        "webapp/ext/sockets.py and server.py close sessions with it",
    ),
    Attribute(
        _engineio_socket,
        "engineio.socket.Socket",
        "queue",
        "webapp/ext/queue_manager.py StreamQueueManager.backlog measures a client and "
        "cut empties it",
    ),
    Attribute(
        _engineio_socket,
        "engineio.socket.Socket",
        "sid",
        "webapp/ext/queue_manager.py StreamQueueManager.cut looks up the session's environ",
    ),
    Attribute(
        _manager,
        "socketio.RedisManager",
        "redis",
        "webapp/ext/queue_manager.py StreamQueueManager._redis_connect and _publish",
    ),
    Attribute(
        _manager,
        "socketio.RedisManager",
        "redis_url",
        "webapp/ext/queue_manager.py StreamQueueManager._client connects to it",
    ),
]


def check_method(method: Method) -> None:
    found = getattr(method.owner, method.name, None)
    assert callable(found), (
        f"{method.label} is gone; {method.where}. Re-check that code against the new "
        "release before changing the pins."
    )
    actual = str(inspect.signature(found))
    assert actual == method.signature, (
        f"{method.label} changed from {method.signature} to {actual}; {method.where}."
    )
    if method.called_by is not None:
        caller = getattr(CALLERS[method.called_by], method.called_by)
        assert method.name in caller.__code__.co_names, (
            f"{CALLERS[method.called_by].__qualname__}.{method.called_by} no longer calls "
            f"{method.name}, so what overrides or replaces it is never reached; "
            f"{method.where}."
        )


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.label)
def test_private_method_is_as_recorded(method):
    check_method(method)


@pytest.mark.parametrize("attribute", ATTRIBUTES, ids=lambda a: f"{a.owner}.{a.name}")
def test_private_attribute_exists(attribute):
    assert hasattr(attribute.make(), attribute.name), (
        f"{attribute.owner}.{attribute.name} is gone; {attribute.where}."
    )


@pytest.mark.parametrize("distribution", sorted(RECORDED_FROM))
def test_pins_are_the_releases_recorded_from(distribution):
    """Moving a pin means re-checking the names above against the new release."""
    recorded = RECORDED_FROM[distribution]
    installed = version(distribution)
    assert installed.startswith(recorded + "."), (
        f"{distribution} {installed} is installed; the names here were recorded from "
        f"{recorded}: re-check them (and webapp/ext) before moving the pin."
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [
        requirement
        for requirement in project["project"]["optional-dependencies"]["web"]
        if requirement.startswith(distribution + "~=")
    ]
    assert [pin.split("~=")[1].rsplit(".", 1)[0] for pin in pins] == [recorded], (
        f"pyproject pins {pins} for {distribution}; the names here were recorded from {recorded}."
    )


def test_a_renamed_method_is_reported_with_where_we_depend_on_it(monkeypatch):
    monkeypatch.delattr(socketio.Server, "_send_eio_packet")
    [method] = [m for m in METHODS if m.name == "_send_eio_packet"]
    with pytest.raises(AssertionError, match=r"_send_eio_packet is gone; .*send_packets"):
        check_method(method)


def test_a_changed_signature_is_reported(monkeypatch):
    monkeypatch.setattr(socketio.PubSubManager, "_handle_emit", lambda self, message, extra: None)
    [method] = [m for m in METHODS if m.name == "_handle_emit"]
    with pytest.raises(AssertionError, match=r"_handle_emit changed from \(self, message\)"):
        check_method(method)


def test_an_override_no_longer_called_is_reported(monkeypatch):
    def _thread(self):
        for message in self._listen_for_messages():
            self._dispatch(message)

    monkeypatch.setattr(socketio.PubSubManager, "_thread", _thread)
    [method] = [m for m in METHODS if m.name == "_handle_emit"]
    with pytest.raises(AssertionError, match=r"_thread no longer calls _handle_emit"):
        check_method(method)
