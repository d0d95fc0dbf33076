"""Socket.IO handlers: only logged-in users connect; each joins its own rooms."""

from __future__ import annotations

import structlog
from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, join_room

from webapp.auth import current_user

log = structlog.get_logger(__name__)


def register(socketio: SocketIO) -> None:
    @socketio.on("connect")
    def on_connect(auth=None):
        user = current_user()
        if user is None:
            log.info("socket.refused", reason="not logged in")
            raise ConnectionRefusedError("not logged in")
        join_room(user.own_room)
        for room in user.rooms:
            join_room(room)
        log.info("socket.connected", user=user.name, sid=request.sid)

    @socketio.on("disconnect")
    def on_disconnect(reason=None):
        log.info("socket.disconnected", sid=request.sid, reason=str(reason))
