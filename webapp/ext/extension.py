"""``StreamBridge``: the Flask extension that puts streambridge into any Flask app.

    from flask import Flask
    from streambridge.webapp.ext.extension import StreamBridge

    app = Flask(__name__)
    app.config["REDIS_URL"] = "redis://localhost:6379/0"
    bridge = StreamBridge(app)          # or StreamBridge() ... bridge.init_app(app)

    @bridge.rooms_loader
    def rooms(user_id):                 # optional: extra rooms this user may receive
        return ["team:blue"]

    @bridge.authorize_publish
    def may_publish(user_id, room):     # optional: who may publish where (publish_as)
        return room == f"user:{user_id}"

    @bridge.authorize_room
    def may_subscribe(user_id, room):   # optional: rooms a page may ask for (sb.subscribe)
        return room.startswith("order:") and owns(user_id, room)

    @bridge.authorize_admin
    def is_admin(user_id):              # optional: who sees the operator dashboard
        return user_id in ADMINS

    bridge.presence("order:123")        # who is connected there: {"alice": 2, ...}

It sets up Flask-SocketIO on ``STREAMBRIDGE_SOCKETIO_PATH`` with the Redis queue,
refuses sockets without a logged-in user, puts each user in ``user:<id>`` (plus the
rooms from ``rooms_loader``), catches clients up from the stream, and serves the
browser client at ``/streambridge.js``. Who the user is comes from ``user_loader``;
by default Flask-Login's ``current_user`` when Flask-Login is installed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, request
from flask_socketio import SocketIO
from streambridge.webapp.ext import dashboard_views, room_history, sockets
from streambridge.webapp.ext.catchup import CatchUp
from streambridge.webapp.ext.dashboard import Dashboard
from streambridge.webapp.ext.dashboard_samples import Samples
from streambridge.webapp.ext.identity import USER_ROOM_PREFIX, Viewer
from streambridge.webapp.ext.metrics import LATENCY_BUCKETS, WebMetrics
from streambridge.webapp.ext.presence_keeper import PresenceKeeper
from streambridge.webapp.ext.queue_manager import StreamQueueManager
from streambridge.webapp.ext.request_bounds import RequestBounds
from streambridge.webapp.ext.subscriptions import MaySubscribe, Subscriptions, with_time_limit

from streambridge import defaults
from streambridge.contract import Event, room_error
from streambridge.presence import Presence
from streambridge.publisher import Publisher
from streambridge.redis_conn import ERRORS
from streambridge.settings import WebSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
CLIENT_PARTS = (STATIC / "vendor" / "socket.io.min.js", STATIC / "streambridge.js")
EXTENSION_KEY = "streambridge"

UserLoader = Callable[[], Any]
RoomsLoader = Callable[[str], Iterable[str]]
PublishAuthorizer = Callable[[str, str | None], bool]
RoomAuthorizer = Callable[[str, str], bool]
AdminAuthorizer = Callable[[str], bool]
LoginsAlive = Callable[[Iterable[str]], set[str]]
LOGIN_CHECK_EVERY_S = 0.5


class PublishRefused(PermissionError):
    """This user may not publish to that room (``publish_as``)."""


@dataclass
class State:
    """What one app's streambridge holds (``app.extensions["streambridge"]``)."""

    settings: WebSettings
    redis: redis.Redis
    socketio: SocketIO
    manager: StreamQueueManager
    catchup: CatchUp
    publisher: Publisher
    metrics: WebMetrics
    extension: StreamBridge
    logins_alive: LoginsAlive | None = None
    presence: PresenceKeeper | None = None  # None: STREAMBRIDGE_PRESENCE is off
    dashboard: Dashboard | None = None  # None: STREAMBRIDGE_DASHBOARD_PATH is empty

    def start_background(self) -> None:
        """This server's own tasks, once it serves: the login watcher and the
        dashboard's sampler."""
        self.socketio.start_background_task(self.watch_sockets)
        if self.dashboard is not None:
            start, sleep = self.socketio.start_background_task, self.socketio.sleep
            start(self.dashboard.run, sleep)
            start(self.dashboard.recheck_admins, start, sleep)

    def watch_sockets(self) -> None:
        """Every half second: disconnect sockets whose login has ended (logout, expiry)
        and close Engine.IO sessions that never connected to Socket.IO in time."""
        unjoined: dict[str, float] = {}
        while True:
            self.socketio.sleep(LOGIN_CHECK_EVERY_S)
            try:
                self.close_unjoined(unjoined, time.monotonic())
                if self.logins_alive is not None:
                    self.close_ended_logins()
            except ERRORS as exc:
                log.warning("web.login_check_failed", extra={"error": str(exc)})
            except Exception as exc:  # the watcher must outlive any one failure
                log.exception("web.login_check_failed", extra={"error": str(exc)})

    def close_unjoined(self, first_seen: dict[str, float], now: float) -> int:
        """Close Engine.IO sessions (no login needed to open one) that have not connected
        to the Socket.IO namespace within ``connect_timeout_s``: otherwise a client could
        hold them for ever by answering pings. ``first_seen`` is kept between calls."""
        eio = self.socketio.server.eio
        closed = 0
        for eio_sid, sock in list(eio.sockets.items()):
            if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
                first_seen.pop(eio_sid, None)
                continue
            since = first_seen.setdefault(eio_sid, now)
            if now - since > self.settings.connect_timeout_s:
                first_seen.pop(eio_sid, None)
                log.info("socket.never_connected", extra={"eio_sid": eio_sid})
                sock.close(wait=False, abort=False)  # wait=False: see sockets.py
                closed += 1
        for eio_sid in [e for e in first_seen if e not in eio.sockets]:
            del first_seen[eio_sid]
        return closed

    def close_ended_logins(self) -> int:
        """Close every socket of this server whose login has ended, and any socket the
        catch-up does not know (it never completed a connect): what counts is what is
        connected, never what a client said."""
        assert self.logins_alive is not None
        known = self.catchup.clients
        connected = [sid for sid, _ in self.manager.get_participants("/", None)]
        clients = [known[sid] for sid in connected if sid in known]
        alive = self.logins_alive(c.user.login_id for c in clients if c.user.login_id)
        ended = [c for c in clients if c.user.login_id and c.user.login_id not in alive]
        for client in ended:
            log.info("socket.login_ended", extra={"sid": client.sid, "user": client.user.name})
            sockets.close(self.socketio.server, client.sid, client.namespace)
        strangers = [
            sid
            for sid in connected
            # Fully connected (its connect handler has returned) yet never caught up.
            if sid not in known
            and not self.manager.ledger.is_held(sid)
            and self.manager.is_connected(sid, "/")
        ]
        for sid in strangers:
            log.warning("socket.unknown_closed", extra={"sid": sid})
            sockets.close(self.socketio.server, sid)
        return len(ended) + len(strangers)


def flask_login_user() -> str | None:
    """The default user loader: Flask-Login's ``current_user`` if it is installed."""
    try:
        from flask_login import current_user
    except ImportError:
        return None
    if current_user and getattr(current_user, "is_authenticated", False):
        return str(current_user.get_id())
    return None


class StreamBridge:
    def __init__(
        self,
        app: Flask | None = None,
        *,
        user_loader: UserLoader | None = None,
        rooms_loader: RoomsLoader | None = None,
        settings: WebSettings | None = None,
        redis_client: redis.Redis | None = None,
        logins_alive: LoginsAlive | None = None,
        bound_every_request: bool = False,
        **options: Any,
    ) -> None:
        """``options`` are settings by field name (``stream="events"``,
        ``socketio_path="/ws/socket.io"``, ...); they win over ``app.config``, which
        wins over the environment."""
        self._user_loader = user_loader or flask_login_user
        self._rooms_loader = rooms_loader
        self._authorize_publish: PublishAuthorizer | None = None
        self._authorize_room: RoomAuthorizer | None = None
        self._authorize_admin: AdminAuthorizer | None = None
        self._may_subscribe: MaySubscribe | None = None  # the hook with its time limit
        self._settings = settings
        self._redis_client = redis_client
        self._logins_alive = logins_alive
        # The Socket.IO path's bodies are always bounded; with this, the app's own too.
        self.bound_every_request = bound_every_request
        self.options = options
        self.socketio: SocketIO | None = None
        if app is not None:
            self.init_app(app)

    # -- hooks --------------------------------------------------------------------
    def user_loader(self, fn: UserLoader) -> UserLoader:
        """Register the function that says who is logged in: it returns a user id
        (str), a ``Viewer``, or None for nobody."""
        self._user_loader = fn
        return fn

    def rooms_loader(self, fn: RoomsLoader) -> RoomsLoader:
        """Register the function that lists the extra rooms a user id may receive."""
        self._rooms_loader = fn
        return fn

    def authorize_publish(self, fn: PublishAuthorizer) -> PublishAuthorizer:
        """Register the function that says whether a user id may publish to a room
        (None: to everyone) through ``publish_as``. Without one, a user may publish
        where it may receive: everyone, its own room and its granted rooms. An
        exception or anything but ``True`` counts as no."""
        self._authorize_publish = fn
        return fn

    def authorize_room(self, fn: RoomAuthorizer) -> RoomAuthorizer:
        """Register the function that says whether a user id may subscribe to a room on
        request (``sb.subscribe(room)`` in the browser). It runs in the app's context,
        on each request (also each re-subscription after a reconnect); an exception,
        no answer within ``STREAMBRIDGE_AUTHORIZE_TIMEOUT_S`` or anything but ``True``
        counts as no. Without one, no room can be subscribed on request."""
        self._authorize_room = fn
        return fn

    def authorize_admin(self, fn: AdminAuthorizer) -> AdminAuthorizer:
        """Register the function that says whether a user id is an admin: it may see the
        operator dashboard (``STREAMBRIDGE_DASHBOARD_PATH``) and act on dead letters. An
        exception or anything but ``True`` counts as no; without one, nobody is."""
        self._authorize_admin = fn
        return fn

    def is_admin(self, viewer: Viewer) -> bool:
        if self._authorize_admin is None:
            return False
        try:
            return self._authorize_admin(viewer.name) is True
        except Exception as exc:  # a failing hook refuses; it never lets through
            log.warning(
                "dashboard.authorize_failed", extra={"user": viewer.name, "error": str(exc)[:200]}
            )
            return False

    def may_subscribe(self, viewer: Viewer, room: str) -> bool:
        """Whether a user may have ``room``: its own or a granted room, or one
        ``authorize_room`` allows (with its time limit, as a socket's request). Never
        another user's ``user:`` room."""
        if viewer.may_receive(room):
            return True
        if room.startswith(USER_ROOM_PREFIX) or self._may_subscribe is None:
            return False
        return self._may_subscribe(viewer, room)

    def presence(self, room: str, namespace: str = "/") -> dict[str, int]:
        """Who is connected to ``room`` on every web server: user id -> its connections.
        A connection is in the rooms granted to it at connect and those it subscribed
        to. Raises ``PresenceUnavailable`` when Redis does not answer in time,
        ``ValueError`` for a name that is no room, ``RuntimeError`` if presence is off."""
        error = room_error(room)
        if error is not None:
            raise ValueError(error)
        keeper = state().presence
        if keeper is None:
            raise RuntimeError("presence is off (STREAMBRIDGE_PRESENCE=false)")
        return keeper.read(namespace, room).users

    def history(
        self,
        room: str | None,
        limit: int | None = None,
        before: str | None = None,
        namespace: str = "/",
    ) -> dict[str, Any]:
        """The newest events of ``room`` (None: the broadcast), newest first, from the
        room's history: ``{"room", "events": [{"channel", "body", "meta"}, ...], "next"}``
        (``next``: ``before`` for the next page, None at the end). ``limit``: at most
        ``STREAMBRIDGE_HISTORY_API_LIMIT`` (default 50, or that if less). The app checks
        who may read the room (as ``may_subscribe`` does for a user). ``ValueError`` for
        bad input."""
        if room is not None and (error := room_error(room)) is not None:
            raise ValueError(error)
        sb = state()
        if limit is None:
            limit = min(defaults.HISTORY_PAGE, sb.settings.history_api_limit)
        if not 1 <= limit <= sb.settings.history_api_limit:
            raise ValueError(f"limit: 1 to {sb.settings.history_api_limit}")
        return room_history.recent(
            sb.redis, sb.catchup.shards, room, limit=limit, before=before, namespace=namespace
        )

    def current_viewer(self) -> Viewer | None:
        loaded = self._user_loader()
        if loaded is None or loaded is False or loaded == "":
            return None
        if isinstance(loaded, Viewer):
            return loaded
        return self.viewer_of(str(loaded))

    def viewer_of(self, user_id: str) -> Viewer:
        """A user id with the rooms ``rooms_loader`` grants it."""
        rooms = frozenset(self._rooms_loader(user_id)) if self._rooms_loader else frozenset()
        return Viewer(user_id, rooms)

    def may_publish(self, viewer: Viewer, room: str | None) -> bool:
        if self._authorize_publish is None:
            return viewer.may_receive(room)
        try:
            return self._authorize_publish(viewer.name, room) is True
        except Exception as exc:  # a failing hook refuses; it never lets through
            log.warning(
                "publish.authorize_failed", extra={"user": viewer.name, "error": str(exc)[:200]}
            )
            return False

    # -- set-up -------------------------------------------------------------------
    def init_app(self, app: Flask) -> State:
        settings = self._settings or WebSettings.from_config(app.config, **self.options)
        # surrogateescape: an entry that is not UTF-8 reads (and is skipped as invalid)
        # instead of failing the whole XRANGE page, and every replay that covers it.
        client = self._redis_client or settings.connect(
            pool_size=settings.redis_pool_size, encoding_errors="surrogateescape"
        )
        metrics = WebMetrics()
        manager = StreamQueueManager(
            settings.redis_url,
            channel=settings.queue_channel,
            cluster=settings.cluster,
            sharded_pubsub=settings.sharded_pubsub,
            shards=settings.shards,
            shard_channels=settings.stream_channels,
            max_client_queue=settings.max_client_queue,
            metrics=metrics,
        )
        socketio = SocketIO(
            app,
            async_mode=settings.async_mode,
            path=settings.socketio_path.lstrip("/"),
            client_manager=manager,
            max_http_buffer_size=settings.max_request_bytes,
            ping_interval=settings.ping_interval_s,
            # None: same origin only (python-socketio compares Origin with Host).
            cors_allowed_origins=_origin_check(settings.allowed_origins),
        )
        # Outside the Socket.IO server: it must never see a body it would not read.
        prefix = None if self.bound_every_request else settings.socketio_path
        app.wsgi_app = RequestBounds(  # type: ignore[method-assign]
            app.wsgi_app, settings.max_request_bytes, prefix
        )
        if not settings.websocket_compression:
            app.wsgi_app = _NoWebSocketExtensions(app.wsgi_app)  # type: ignore[method-assign]
        catchup = CatchUp(client, manager, settings, metrics)
        presence = None
        if settings.presence:
            presence = PresenceKeeper(
                Presence(client, settings.stream, settings.presence_ttl_s),
                publish=manager._publish,
                send=manager.send_to,
                start=socketio.start_background_task,
                ttl_s=settings.presence_ttl_s,
                metrics=metrics,
            )
            manager.on_presence = presence.deliver

        def on_gap() -> None:
            catchup.on_gap()
            if presence is not None:
                presence.on_gap()

        manager.gaps.set_handler(on_gap)
        dashboard = None
        if settings.dashboard_path:
            dashboard = Dashboard(
                client,
                settings,
                Samples(
                    client, settings, metrics.figures, LATENCY_BUCKETS, defaults.DASHBOARD_WINDOW_S
                ),
                viewer_of=lambda sid: c.user if (c := catchup.clients.get(sid)) else None,
                is_admin=self._admin_check(app, socketio, settings),
                is_connected=lambda sid: manager.is_connected(sid, "/"),
                send=manager.send_to,
            )
        state = State(
            settings,
            client,
            socketio,
            manager,
            catchup,
            Publisher(client, settings),
            metrics,
            self,
            self._logins_alive,
            presence,
            dashboard,
        )
        app.extensions[EXTENSION_KEY] = state
        self._may_subscribe = self._room_authorizer(app, socketio, settings)
        subscriptions = Subscriptions(catchup, settings, self._may_subscribe, presence)
        sockets.register(socketio, catchup, self.current_viewer, subscriptions, presence, dashboard)
        metrics.connected.set_function(lambda: len(catchup.clients))
        app.register_blueprint(_client_blueprint(settings.client_script_url))
        app.register_blueprint(_ops_blueprint())
        if dashboard is not None:
            app.register_blueprint(
                dashboard_views.blueprint(
                    settings.dashboard_path, settings.client_script_url, settings.socketio_path
                )
            )
        missing = [str(p) for p in CLIENT_PARTS if not p.exists()]
        if missing:
            log.warning(
                "web.client_script_missing",
                extra={"files": missing, "fix": "reinstall streambridge[web]"},
            )
        self.socketio = socketio
        return state

    def _admin_check(
        self, app: Flask, socketio: SocketIO, settings: WebSettings
    ) -> Callable[[Viewer], bool]:
        """``authorize_admin`` for sockets and the sampler, outside any request: in the
        app's context, with the room hook's time limit."""

        def ask(user_id: str, _room: str) -> Any:
            return self._authorize_admin is not None and self._authorize_admin(user_id)

        timed = with_time_limit(
            ask, settings.authorize_timeout_s, socketio.start_background_task, app.app_context
        )
        return lambda viewer: timed(viewer, "dashboard")

    def _room_authorizer(
        self, app: Flask, socketio: SocketIO, settings: WebSettings
    ) -> MaySubscribe:
        """``authorize_room``'s answer with its time limit; the hook is looked up on each
        request (it is often registered after ``init_app``)."""

        def ask(user_id: str, room: str) -> Any:
            return self._authorize_room is not None and self._authorize_room(user_id, room)

        return with_time_limit(
            ask, settings.authorize_timeout_s, socketio.start_background_task, app.app_context
        )

    # -- producing from the host app -----------------------------------------------
    def publish(
        self, channel: str, body: Any, room: str | None = None, namespace: str = "/"
    ) -> str:
        """Append an event to the stream (validated); returns its id."""
        return state().publisher.publish(channel, body, room, namespace)

    emit_event = publish  # the name the original pattern used

    def publish_as(
        self,
        user: str | Viewer,
        channel: str,
        body: Any,
        room: str | None = None,
        namespace: str = "/",
    ) -> str:
        """Append an event on behalf of a user (a user id or a ``Viewer``): validated,
        authorized with ``authorize_publish``, and marked with who sent it
        (``meta.from`` in the browser). Raises ``PublishRefused`` or ``ContractError``."""
        viewer = user if isinstance(user, Viewer) else self.viewer_of(str(user))
        event = state().publisher.event(channel, body, room, namespace, sender=viewer.name)
        return self.publish_event_as(viewer, event)

    def publish_event_as(self, viewer: Viewer, event: Event) -> str:
        """``publish_as`` for an event already built (its ``from`` is the viewer)."""
        if event.sender != viewer.name:
            raise PublishRefused("an event published as a user carries that user's name")
        if not self.may_publish(viewer, event.room):
            where = f"room {event.room!r}" if event.room is not None else "everyone"
            raise PublishRefused(f"{viewer.name} may not publish to {where}")
        return state().publisher.publish_events([event])[0]


def _origin_check(allowed: list[str]) -> Callable[[str | None, dict], bool]:
    """Sockets from this app's own origin, or one of ``allowed``; nothing else, even
    with a valid session cookie (cross-site WebSocket hijacking)."""
    extra = {o.rstrip("/") for o in allowed}

    def check(origin: str | None, environ: dict) -> bool:
        if origin is None:
            return True  # not a browser: no ambient cookie to abuse
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        allowed_here = origin.rstrip("/") in extra or origin == own
        if not allowed_here:
            log.warning("socket.origin_refused", extra={"origin": origin[:200]})
        return allowed_here

    return check


class _NoWebSocketExtensions:
    """WSGI middleware that hides the client's WebSocket extension offer, so the
    server never negotiates permessage-deflate (eventlet accepts it whenever offered;
    it costs CPU per message). Outermost, so the Socket.IO server never sees it."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Any) -> Any:
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return self.wsgi_app(environ, start_response)


def state(app: Flask | None = None) -> State:
    return (app or current_app).extensions[EXTENSION_KEY]


def _ops_blueprint() -> Blueprint:
    bp = Blueprint("streambridge_ops", __name__)

    @bp.get("/healthz")
    def healthz():
        """The process is up."""
        return {"status": "ok"}

    @bp.get("/readyz")
    def readyz():
        """Redis answers and the queue subscription is in place."""
        sb = state()
        try:
            sb.redis.ping()
        except ERRORS as exc:
            return {"status": "unavailable", "redis": str(exc)}, 503
        if not sb.manager.subscribed.is_set():
            return {"status": "unavailable", "queue": "not subscribed"}, 503
        return {"status": "ok"}

    return bp


def _client_blueprint(url: str) -> Blueprint:
    bp = Blueprint("streambridge_client", __name__)
    cache: dict[str, tuple[bytes, str]] = {}

    @bp.get(url)
    def client_script():
        if "js" not in cache:
            try:
                data = b"\n;\n".join(p.read_bytes() for p in CLIENT_PARTS)
            except FileNotFoundError as exc:
                return Response(
                    f"// streambridge: {exc.filename} is missing; reinstall streambridge[web]\n",
                    status=503,
                    mimetype="text/javascript",
                )
            cache["js"] = (data, hashlib.sha256(data).hexdigest()[:32])
        data, etag = cache["js"]
        response = Response(data, mimetype="text/javascript")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.set_etag(etag)
        response.cache_control.no_cache = True
        return response.make_conditional(request)

    return bp
