"""Run a Flask app that uses streambridge under its async server.

Imported only after eventlet has monkey-patched (``streambridge.async_mode.prepare``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import traceback
from collections import Counter
from typing import Any

import greenlet
from flask import Flask
from streambridge.webapp.ext.extension import state

from streambridge import metrics_http
from streambridge.redis_conn import redacted

log = logging.getLogger(__name__)
LISTEN_BACKLOG = 1024
IDLE_MARGIN_S = 15.0
"""Beyond the Socket.IO ping window, how long a connection may send nothing at all."""


def run_app(app: Flask, host: str, port: int) -> None:
    """Subscribe to the queue, then serve until SIGTERM/SIGINT."""
    sb = state(app)
    metrics_http.serve(sb.settings, sb.metrics.registry)  # internal port, not the app's
    start_queue_listener(app)
    serving = greenlet.getcurrent()
    pool = None  # the connection handlers' green threads, under eventlet
    if sb.settings.async_mode == "eventlet":
        import eventlet

        pool = eventlet.GreenPool(sb.settings.max_connections)

    def on_term(signum: int, _frame: object) -> None:
        log.info("web.signal", extra={"signal": signal.Signals(signum).name})
        # Close every client connection so their handlers end (the server waits for
        # them) and the clients reconnect, to another server if there is one.
        eio = sb.socketio.server.eio
        for sock in list(eio.sockets.values()):
            sock.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)
        if pool is not None:
            from eventlet import hubs

            # The server waits for every connection's handler before it returns; one
            # that never ends (a half-sent request, a stuck peer) must not keep it up.
            grace = sb.settings.shutdown_grace_s
            eventlet.spawn_after(grace, _cut_stragglers, pool, grace)
            # The async server returns on SystemExit, but under eventlet the handler runs
            # in whichever green thread is current: deliver the exit to the serving one.
            if greenlet.getcurrent() is not serving:
                hubs.get_hub().schedule_call_global(0, serving.throw, SystemExit(0))
                return
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info(
        "web.listening",
        extra={
            "url": f"http://{host}:{port}/",
            "redis": redacted(sb.settings.redis_url),
            "async_mode": sb.settings.async_mode,
        },
    )
    with contextlib.suppress(SystemExit):
        if pool is not None:
            _serve_eventlet(app, host, port, pool)
        else:
            log.warning(
                "web.development_server",
                extra={
                    "hint": "threading mode serves with Werkzeug's development server; "
                    "use eventlet (the default) in production"
                },
            )
            sb.socketio.run(app, host=host, port=port, log_output=False, allow_unsafe_werkzeug=True)
    log.info("web.stopped")


def _serve_eventlet(app: Flask, host: str, port: int, pool: Any) -> None:
    # As socketio.run() does, but with a listen backlog, a green-thread pool sized for
    # many long-lived sockets (eventlet's defaults are 50 and 1024), a socket timeout
    # (eventlet's default is none, so a client that stops halfway through a request
    # would hold its connection for ever; Socket.IO clients answer a ping every ping
    # interval, so a live one is never idle that long), and the per-address caps and
    # deadlines of connection_guard.
    import eventlet
    import eventlet.wsgi
    from streambridge.webapp.ext.connection_guard import AddressLimits, protocol

    sb = state(app)
    settings = sb.settings
    eio = sb.socketio.server.eio
    idle_timeout = eio.ping_interval + eio.ping_interval_grace_period + eio.ping_timeout
    request_timeout = settings.request_timeout_s or idle_timeout + IDLE_MARGIN_S
    long_poll = eio.ping_interval + eio.ping_timeout  # how long a polling GET may wait
    if request_timeout <= long_poll:
        log.warning(
            "web.request_timeout_below_long_poll",
            extra={
                "request_timeout_s": request_timeout,
                "long_poll_s": long_poll,
                "hint": "long-polling clients will be cut and reconnect; raise "
                "STREAMBRIDGE_REQUEST_TIMEOUT_S or leave it unset",
            },
        )
    limits = AddressLimits(
        settings.per_address_cap(settings.max_connections_per_address),
        settings.per_address_cap(settings.max_unfinished_per_address),
        sb.metrics,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = eventlet.listen((host, port), family, backlog=LISTEN_BACKLOG)
    # Accepted sockets inherit it: small writes (a replay's events, then its notice) go
    # out at once instead of waiting ~40 ms for the client's delayed ACK (Nagle).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    eventlet.wsgi.server(
        listener,
        app,
        log_output=False,
        debug=False,  # eventlet's default sends tracebacks to clients
        custom_pool=pool,
        socket_timeout=idle_timeout + IDLE_MARGIN_S,
        protocol=protocol(
            limits,
            head_timeout_s=settings.request_head_timeout_s,
            request_timeout_s=request_timeout,
            max_body_bytes=settings.max_request_bytes,
        ),
    )


def _cut_stragglers(pool: Any, grace_s: float) -> None:
    from streambridge.webapp.ext.connection_guard import waiting_in

    stragglers = list(pool.coroutines_running)
    if stragglers:
        stacks = [traceback.extract_stack(t.gr_frame) if t.gr_frame else [] for t in stragglers]
        where = Counter(waiting_in(stack) for stack in stacks)
        log.warning(
            "web.connections_cut",
            extra={
                "connections": len(stragglers),
                "grace_s": grace_s,
                "waiting_in": dict(where.most_common(3)),
            },
        )
    for thread in stragglers:
        thread.kill()


def start_queue_listener(app: Flask) -> None:
    """Subscribe to the queue now, and wait for it, so that nothing published after
    this server answers its first request is missed."""
    sb = state(app)
    server = sb.socketio.server
    if not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()
    while not sb.manager.wait_subscribed(sb.settings.queue_ready_timeout_s):
        log.warning("web.waiting_for_queue", extra={"redis": redacted(sb.settings.redis_url)})
    sb.socketio.start_background_task(sb.watch_sockets)
