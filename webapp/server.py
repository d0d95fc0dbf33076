"""Run the web app under its async server. Imported only after eventlet patched."""

from __future__ import annotations

import contextlib
import signal
import sys

import structlog

from streambridge.redis_conn import redacted
from streambridge.settings import WebSettings
from webapp import ConfigError, create_app, get_socketio

log = structlog.get_logger("webapp")


def serve(settings: WebSettings) -> int:
    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    socketio = get_socketio(app)
    start_queue_listener(socketio, settings)

    def on_term(signum: int, _frame: object) -> None:
        log.info("web.signal", signal=signal.Signals(signum).name)
        # eventlet's wsgi server returns on SystemExit/KeyboardInterrupt.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info(
        "web.listening",
        url=f"http://{settings.host}:{settings.port}/",
        redis=redacted(settings.redis_url),
        async_mode=settings.async_mode,
    )
    with contextlib.suppress(SystemExit):
        socketio.run(app, host=settings.host, port=settings.port, log_output=False)
    log.info("web.stopped")
    return 0


def start_queue_listener(socketio, settings: WebSettings) -> None:
    """Subscribe to the queue now, and wait for it, so that nothing published after
    this server answers its first request is missed."""
    server = socketio.server
    if not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()
    while not server.manager.wait_subscribed(settings.queue_ready_timeout_s):
        log.warning("web.waiting_for_queue", redis=redacted(settings.redis_url))
