"""Socket.IO handlers: only logged-in users connect; each joins only its own rooms
(``user:<id>`` and the rooms granted to it) and is caught up from the stream."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, join_room

from webapp.catchup import CatchUp
from webapp.identity import Viewer
from webapp.metrics import WebMetrics

log = structlog.get_logger(__name__)


def register(
    socketio: SocketIO,
    catchup: CatchUp,
    current_viewer: Callable[[], Viewer | None],
    metrics: WebMetrics,
) -> None:
    @socketio.on("connect")
    def on_connect(auth=None):
        sid = request.sid
        catchup.hold(sid)  # before the login lookup, which does I/O
        viewer = current_viewer()
        if viewer is None:
            catchup.on_disconnect(sid)
            log.info("socket.refused", reason="not logged in")
            raise ConnectionRefusedError("not logged in")
        catchup.on_connect(sid, "/", viewer)
        for room in viewer.all_rooms:
            join_room(room)
        metrics.connected.inc()
        log.info("socket.connected", user=viewer.name, sid=sid)
        # Last, with no I/O after it: the replay must start after the CONNECT packet.
        socketio.start_background_task(catchup.run, sid, auth)

    @socketio.on("disconnect")
    def on_disconnect(reason=None):
        if catchup.on_disconnect(request.sid):
            metrics.connected.dec()
        log.info("socket.disconnected", sid=request.sid, reason=str(reason))
