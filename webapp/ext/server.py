"""Run a Flask app that uses streambridge under its async server.

Imported only after gevent or eventlet has monkey-patched (``streambridge.async_mode.prepare``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import greenlet
from flask import Flask
from streambridge.webapp.ext.extension import state

from streambridge import metrics_http
from streambridge.listening import WEB, CannotListen, binding
from streambridge.redis_conn import redacted

log = logging.getLogger(__name__)
LISTEN_BACKLOG = 1024
PRESENCE_LEAVE_S = 3.0  # at shutdown; past it, the presence ttl removes them
IDLE_MARGIN_S = 15.0
"""Beyond the Socket.IO ping window, how long a connection may send nothing at all."""


def run_app(app: Flask, host: str, port: int) -> None:
    """Subscribe to the queue, then serve until SIGTERM/SIGINT."""
    sb = state(app)
    metrics_http.serve(sb.settings, sb.metrics.registry)  # internal port, not the app's
    start_queue_listener(app)
    if sb.settings.async_mode == "gevent":
        _log_listening(sb, host, port)
        _serve_gevent(app, host, port)
        _leave_presence(sb)
        log.info("web.stopped")
        return
    serving = greenlet.getcurrent()
    pool = None  # the connection handlers' green threads, under eventlet
    if sb.settings.async_mode == "eventlet":
        import eventlet

        pool = eventlet.GreenPool(sb.settings.max_connections)

    def on_term(signum: int, _frame: object) -> None:
        log.info("web.signal", extra={"signal": signal.Signals(signum).name})
        _close_clients(sb)
        if pool is not None:
            from eventlet import hubs

            # The server waits for every connection's handler before it returns; one
            # that never ends (a half-sent request, a stuck peer) must not keep it up.
            grace = sb.settings.shutdown_grace_s
            eventlet.spawn_after(
                grace, lambda: _cut_stragglers(list(pool.coroutines_running), grace, _kill_each)
            )
            # The async server returns on SystemExit, but under eventlet the handler runs
            # in whichever green thread is current: deliver the exit to the serving one.
            if greenlet.getcurrent() is not serving:
                hubs.get_hub().schedule_call_global(0, serving.throw, SystemExit(0))
                return
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    _log_listening(sb, host, port)
    with contextlib.suppress(SystemExit):
        if pool is not None:
            _serve_eventlet(app, host, port, pool)
        else:
            log.warning(
                "web.development_server",
                extra={
                    "hint": "threading mode serves with Werkzeug's development server; "
                    "use gevent or eventlet in production"
                },
            )
            try:
                sb.socketio.run(
                    app, host=host, port=port, log_output=False, allow_unsafe_werkzeug=True
                )
            except SystemExit as exc:
                if exc.code in (0, None):  # on_term's
                    raise
                # Werkzeug prints why it could not bind and exits 1.
                raise CannotListen(host, port, WEB, "see Werkzeug's message above") from None
    _leave_presence(sb)
    log.info("web.stopped")


def _leave_presence(sb: Any) -> None:
    """This server's connections leave their rooms' presence now, not a ttl later."""
    if sb.presence is not None and not sb.presence.leave_all(PRESENCE_LEAVE_S):
        log.warning("web.presence_not_left", extra={"ttl_s": sb.settings.presence_ttl_s})


def _log_listening(sb: Any, host: str, port: int) -> None:
    log.info(
        "web.listening",
        extra={
            "url": f"http://{host}:{port}/",
            "redis": redacted(sb.settings.redis_url),
            "async_mode": sb.settings.async_mode,
        },
    )


def _close_clients(sb: Any) -> None:
    """Close every client connection so their handlers end (the server waits for them)
    and the clients reconnect, to another server if there is one."""
    eio = sb.socketio.server.eio
    for sock in list(eio.sockets.values()):
        sock.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)


def _timeouts(sb: Any) -> tuple[float, float]:
    """(idle, request) timeouts: a connection may be silent a little longer than the
    Socket.IO ping window, and a plain request may wait as long as a long poll."""
    eio = sb.socketio.server.eio
    idle_timeout = eio.ping_interval + eio.ping_interval_grace_period + eio.ping_timeout
    request_timeout = sb.settings.request_timeout_s or idle_timeout + IDLE_MARGIN_S
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
    return idle_timeout + IDLE_MARGIN_S, request_timeout


def _address_limits(sb: Any) -> Any:
    from streambridge.webapp.ext.connection_limits import AddressLimits

    settings = sb.settings
    return AddressLimits(
        settings.per_address_cap(settings.max_connections_per_address),
        settings.per_address_cap(settings.max_unfinished_per_address),
        sb.metrics,
    )


def _serve_gevent(app: Flask, host: str, port: int) -> None:
    # gevent's WSGI server with what the eventlet one has (see _serve_eventlet): a
    # listen backlog, a bounded pool, TCP_NODELAY, timeouts and the per-address caps
    # and deadlines (gevent_guard). SIGTERM: close the clients, wait up to the grace
    # for their handlers, cut the rest, return.
    import gevent
    import gevent.pool
    from gevent.pywsgi import WSGIServer
    from streambridge.webapp.ext import gevent_guard

    sb = state(app)
    settings = sb.settings
    gevent_guard.exempt_websockets_from_the_deadline(sb.socketio.server.eio)
    idle_timeout, request_timeout = _timeouts(sb)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)  # gevent's: patched
    # As eventlet.listen: a restarted server can bind while old connections linger.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with binding(host, port, WEB):
        listener.bind((host, port))
        # Two sockets with SO_REUSEADDR can both bind; the second listen() then fails.
        listener.listen(LISTEN_BACKLOG)
    pool = gevent.pool.Pool(settings.max_connections)
    server = WSGIServer(
        listener,
        app,
        spawn=pool,
        handler_class=gevent_guard.handler_class(
            _address_limits(sb),
            idle_timeout_s=idle_timeout,
            head_timeout_s=settings.request_head_timeout_s,
            request_timeout_s=request_timeout,
            max_body_bytes=settings.max_request_bytes,
        ),
        log=None,
        error_log=logging.getLogger(f"{__name__}.gevent"),
    )

    def stop(signame: str) -> None:
        log.info("web.signal", extra={"signal": signame})
        server.close()  # no new connections
        _close_clients(sb)
        grace = settings.shutdown_grace_s
        if not pool.join(timeout=grace):
            _cut_stragglers(list(pool), grace, kill=lambda threads: pool.kill(block=False))
        server.stop(timeout=0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        # gevent runs the handler in a greenlet of its own, where it may block.
        gevent.signal_handler(signum, stop, signal.Signals(signum).name)
    server.serve_forever()


def _serve_eventlet(app: Flask, host: str, port: int, pool: Any) -> None:
    # As socketio.run() does, but with a listen backlog, a green-thread pool sized for
    # many long-lived sockets (eventlet's defaults are 50 and 1024), a socket timeout
    # (eventlet's default is none, so a client that stops halfway through a request
    # would hold its connection for ever; Socket.IO clients answer a ping every ping
    # interval, so a live one is never idle that long), and the per-address caps and
    # deadlines of connection_guard.
    import eventlet
    import eventlet.wsgi
    from streambridge.webapp.ext.connection_guard import protocol

    sb = state(app)
    settings = sb.settings
    idle_timeout, request_timeout = _timeouts(sb)
    limits = _address_limits(sb)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with binding(host, port, WEB):
        # Not SO_REUSEPORT (eventlet's default): a second server on the same port must
        # fail, not silently take half of the first one's connections.
        listener = eventlet.listen((host, port), family, backlog=LISTEN_BACKLOG, reuse_port=False)
    # Accepted sockets inherit it: small writes (a replay's events, then its notice) go
    # out at once instead of waiting ~40 ms for the client's delayed ACK (Nagle).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    eventlet.wsgi.server(
        listener,
        app,
        log_output=False,
        debug=False,  # eventlet's default sends tracebacks to clients
        custom_pool=pool,
        socket_timeout=idle_timeout,
        protocol=protocol(
            limits,
            head_timeout_s=settings.request_head_timeout_s,
            request_timeout_s=request_timeout,
            max_body_bytes=settings.max_request_bytes,
        ),
    )


def _cut_stragglers(threads: list[Any], grace_s: float, kill: Callable[[list[Any]], Any]) -> None:
    """Log where the handlers still running after the grace wait, then kill them."""
    from streambridge.webapp.ext.connection_limits import waiting_in

    if threads:
        stacks = [traceback.extract_stack(t.gr_frame) if t.gr_frame else [] for t in threads]
        where = Counter(waiting_in(stack) for stack in stacks)
        log.warning(
            "web.connections_cut",
            extra={
                "connections": len(threads),
                "grace_s": grace_s,
                "waiting_in": dict(where.most_common(3)),
            },
        )
    kill(threads)


def _kill_each(threads: list[Any]) -> None:
    for thread in threads:
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
    sb.start_background()
