"""The pattern streambridge grew out of, as its examples run it: a Flask-SocketIO server
on the Redis message queue, every client receiving every broadcast, events emitted by
another process through ``SocketIO(message_queue=...).emit()``. Nothing is stored.

    python bench/plain_server.py <port> <redis url> <async mode>
"""

from __future__ import annotations

import sys

PORT, REDIS_URL, MODE = int(sys.argv[1]), sys.argv[2], sys.argv[3]

if MODE == "eventlet":
    import eventlet

    eventlet.monkey_patch()
elif MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()

from flask import Flask  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(
    app, message_queue=REDIS_URL, async_mode=MODE, path="ws/socket.io", cors_allowed_origins="*"
)


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    socketio.run(app, host="127.0.0.1", port=PORT, log_output=False, allow_unsafe_werkzeug=True)
