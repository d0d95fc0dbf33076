"""``register_ws``: the set-up call of the original Flask-SocketIO + Redis pattern,
kept so that migrating is a change of import.

Before::

    register_ws(app, socketio_path="/ws/socket.io", redis_host="localhost")
    ...
    emit_event("message", {"text": "hi"})     # lost if nobody listened

After::

    from streambridge.webapp.ext.compat import register_ws
    from streambridge import emit_event
    register_ws(app, socketio_path="/ws/socket.io", redis_host="localhost")
    ...
    emit_event("message", {"text": "hi"})     # appended to the stream: durable
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from streambridge.webapp.ext.extension import StreamBridge


def register_ws(
    app: Flask,
    socketio_path: str = "/ws/socket.io",
    redis_host: str = "localhost",
    redis_port: int = 6379,
    redis_db: int = 0,
    *,
    redis_url: str | None = None,
    **options: Any,
) -> StreamBridge:
    url = redis_url or f"redis://{redis_host}:{redis_port}/{redis_db}"
    return StreamBridge(app, socketio_path=socketio_path, redis_url=url, **options)
