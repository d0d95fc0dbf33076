"""Socket.IO handlers: only logged-in users connect; each joins only its own rooms
(``user:<name>`` and rooms granted in the users file) and is caught up from the stream."""

from __future__ import annotations

import structlog
from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, join_room

from webapp.auth import current_user
from webapp.catchup import CatchUp

log = structlog.get_logger(__name__)


def register(socketio: SocketIO, catchup: CatchUp) -> None:
    @socketio.on("connect")
    def on_connect(auth=None):
        user = current_user()
        if user is None:
            log.info("socket.refused", reason="not logged in")
            raise ConnectionRefusedError("not logged in")
        sid = request.sid
        # Hold live events first, then join: nothing can slip between replay and live.
        catchup.on_connect(sid, "/", user)
        join_room(user.own_room)
        for room in user.rooms:
            join_room(room)
        log.info("socket.connected", user=user.name, sid=sid)
        # Last, with no I/O after it: the replay must start after the CONNECT packet.
        socketio.start_background_task(catchup.run, sid, auth)

    @socketio.on("disconnect")
    def on_disconnect(reason=None):
        catchup.on_disconnect(request.sid)
        log.info("socket.disconnected", sid=request.sid, reason=str(reason))
