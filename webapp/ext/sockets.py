"""Socket.IO handlers: only logged-in users connect; each joins only its own rooms
(``user:<id>`` and the rooms granted to it) and is caught up from the stream.

Clients send only the requests of ``subscriptions`` (rooms on request). Whatever else
they send never reaches a life-cycle handler: python-socketio dispatches a client event
named ``connect`` or ``disconnect`` to the server's own connect/disconnect handlers
(which would re-run a full catch-up, or make the login watcher forget a socket that
stays open), so such a socket is closed before dispatch.

python-engineio's ``Server.disconnect(sid)`` closes a session and waits for its queue
to drain; for a long-polling session, that is a wait inside the request handler for a
poll that may never come (any bad polling POST, even anonymous, would hold a handler for
good). It is replaced by a close that does not wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import socketio
import structlog
from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, join_room
from streambridge.webapp.ext.catchup import CatchUp
from streambridge.webapp.ext.dashboard import DASHBOARD_EVENT, Dashboard
from streambridge.webapp.ext.identity import Viewer
from streambridge.webapp.ext.pings import share_pings
from streambridge.webapp.ext.presence_keeper import PRESENCE_EVENT, PresenceKeeper
from streambridge.webapp.ext.subscriptions import (
    CLIENT_EVENTS,
    SUBSCRIBE_EVENT,
    UNSUBSCRIBE_EVENT,
    Subscriptions,
)

from streambridge.contract import is_reserved

log = logging.getLogger(__name__)


def register(
    socketio: SocketIO,
    catchup: CatchUp,
    current_viewer: Callable[[], Viewer | None],
    subscriptions: Subscriptions,
    presence: PresenceKeeper | None = None,
    dashboard: Dashboard | None = None,
) -> None:
    refuse_reserved_events(socketio.server)
    disconnect_without_waiting(socketio.server.eio)
    share_pings(socketio.server.eio)

    @socketio.on("connect")
    def on_connect(auth=None):
        sid = request.sid
        catchup.hold(sid)  # before the login lookup, which does I/O
        viewer = current_viewer()
        if viewer is None:
            catchup.on_disconnect(sid)
            log.info("socket.refused", extra={"reason": "not logged in"})
            raise ConnectionRefusedError("not logged in")
        catchup.on_connect(sid, "/", viewer)
        for room in viewer.all_rooms:
            join_room(room)
        if presence is not None:
            presence.connected(sid)
            for room in viewer.granted_rooms:
                presence.join(sid, "/", room, viewer.name)
        log.info("socket.connected", extra={"user": viewer.name, "sid": sid})
        # Last, with no I/O after it: the replay must start after the CONNECT packet.
        socketio.start_background_task(catchup.run, sid, auth)

    @socketio.on(SUBSCRIBE_EVENT)
    def on_subscribe(*args):
        # The answer is the acknowledgement; a request is one argument, an object.
        return subscriptions.subscribe(request.sid, args[0] if len(args) == 1 else None)

    @socketio.on(UNSUBSCRIBE_EVENT)
    def on_unsubscribe(*args):
        return subscriptions.unsubscribe(request.sid, args[0] if len(args) == 1 else None)

    @socketio.on(PRESENCE_EVENT)
    def on_presence(*args):
        return subscriptions.watch_presence(request.sid, args[0] if len(args) == 1 else None)

    if dashboard is not None:

        @socketio.on(DASHBOARD_EVENT)
        def on_dashboard(*args):
            return dashboard.request(request.sid, args[0] if len(args) == 1 else None)

    @socketio.on("disconnect")
    def on_disconnect(reason=None):
        catchup.on_disconnect(request.sid)
        if presence is not None:
            presence.disconnected(request.sid)
        log.info("socket.disconnected", extra={"sid": request.sid, "reason": str(reason)})


def refuse_reserved_events(server: socketio.Server) -> None:
    """Close any socket that sends an event with a reserved name (or no name at all),
    other than the requests a client may make (``CLIENT_EVENTS``)."""
    handle_event = server._handle_event

    def guarded(eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        name = data[0] if isinstance(data, list) and data else None
        if isinstance(name, str) and (not is_reserved(name) or name in CLIENT_EVENTS):
            handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
        # "name" is a LogRecord attribute, which extra= may not set; the process's log
        # set-up merges context variables into each line as it does extras.
        with structlog.contextvars.bound_contextvars(name=repr(name)[:80]):
            log.warning("socket.reserved_event_refused", extra={"sid": sid})
        if sid is not None:
            close(server, sid, namespace)

    server._handle_event = guarded  # type: ignore[method-assign]


def disconnect_without_waiting(eio: Any) -> None:
    """Make ``eio.disconnect(sid)`` close the session without waiting for a poll."""
    close_all = eio.disconnect

    def disconnect(sid: str | None = None) -> None:
        if sid is None:
            close_all()
            return
        sock = eio.sockets.get(sid)
        if sock is not None:
            sock.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
        eio.sockets.pop(sid, None)

    eio.disconnect = disconnect


def close(server: socketio.Server, sid: str, namespace: str = "/") -> None:
    """End a client's session and its connection, whatever the client does next."""
    eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
    server.disconnect(sid, namespace=namespace, ignore_queue=True)
    sock = server.eio.sockets.get(eio_sid) if eio_sid else None
    if sock is not None:
        # wait=False: waiting for a long-poll that may never come would block this
        # green thread for good.
        sock.close(wait=False, abort=False)
