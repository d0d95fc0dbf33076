"""Rooms on request: a connected client asks for a room, the app decides.

Wire form (Socket.IO events with an acknowledgement; ``streambridge.js`` wraps them)::

    emit("streambridge:subscribe", {"room": "order:123", "positions": {...}}, ack)
    emit("streambridge:unsubscribe", {"room": "order:123"}, ack)
    emit("streambridge:presence", {"room": "order:123"}, ack)         # watch, and read
    emit("streambridge:presence", {"room": "order:123", "watch": false}, ack)

``positions`` (optional) is the connect form (``{"<shard>": {"last_id", "epoch"}}``,
or ``"last_id"``/``"epoch"`` at the top for shard 0): the room's missed events after it
are replayed before its live ones, as at connect. The answer is
``{"ok": true, "room", "recovered", "replayed", "reason"?}`` or
``{"ok": false, "room", "reason", "retry"?}`` (``retry: true``: a passing refusal, too
many requests or a catch-up under way; ask again later).

The app's authorization hook says yes or no for each request, on every connection (so a
room revoked between two connections is not joined again); an exception, a timeout or
anything but ``True`` is no, and without a hook nothing can be subscribed. Another
user's ``user:`` room (or another connection's own room) is never given. Per
connection, at most ``max_subscriptions`` rooms and ``subscribe_burst`` requests at
once, then ``subscribe_rate`` per second.

Presence: a client in a room (granted at connect or subscribed) may watch who is there:
the answer is ``{"ok": true, "room", "users": {user: connections}, "seq"}``, then
``streambridge:presence`` events ``{"room", "type": "join"|"leave", "user", "seq"}``
until it stops watching or leaves the room; a change numbered ``seq`` or before is
already in the answer. ``{"room", "type": "stale"}``: changes may have been missed
(the server lost its queue subscription for a moment): ask again. Watching counts as
a request (rate limit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from streambridge.webapp.ext.catchup import CatchUp, Client
from streambridge.webapp.ext.dashboard import DASHBOARD_EVENT
from streambridge.webapp.ext.identity import USER_ROOM_PREFIX, Viewer
from streambridge.webapp.ext.presence_keeper import (
    PRESENCE_EVENT,
    PresenceKeeper,
    PresenceUnavailable,
)

from streambridge.contract import RESERVED_PREFIX, room_error
from streambridge.settings import WebSettings

log = logging.getLogger(__name__)

SUBSCRIBE_EVENT = RESERVED_PREFIX + "subscribe"
UNSUBSCRIBE_EVENT = RESERVED_PREFIX + "unsubscribe"
CLIENT_EVENTS = frozenset({SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT, PRESENCE_EVENT, DASHBOARD_EVENT})
"""The only events a client may send."""
NOT_ALLOWED = "not allowed"
BUSY_WAIT_S = 40.0  # longer than a connect catch-up may retry (catchup.RETRY_S)

MaySubscribe = Callable[[Viewer, str], bool]  # the app's hook, time limit applied


class TokenBucket:
    """``burst`` requests at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Subscriptions:
    def __init__(
        self,
        catchup: CatchUp,
        settings: WebSettings,
        authorize: MaySubscribe,
        presence: PresenceKeeper | None = None,
    ) -> None:
        """``authorize``: the app's answer (with its time limit already applied);
        ``presence``: None when presence is off."""
        self.catchup = catchup
        self.settings = settings
        self.authorize = authorize
        self.presence = presence

    # -- the two requests ---------------------------------------------------------------
    def subscribe(self, sid: str, request: Any) -> dict[str, Any]:
        client, room, refused = self._check(sid, request)
        if refused is not None:
            return refused
        assert client is not None and room is not None
        user = client.user
        if user.may_receive(room):
            # Its own room and granted rooms are joined at connect and caught up then.
            return {"ok": True, "room": room, "recovered": True, "replayed": 0}
        if room.startswith(USER_ROOM_PREFIX):
            return self._refuse(client, room, "another user's room")
        if self.catchup.manager.eio_sid_from_sid(room, client.namespace) is not None:
            # python-socketio puts each connection in a room named by its sid.
            return self._refuse(client, room, "another connection's room")
        if not self._wait_not_held(client):
            return self._refuse(client, room, "still being caught up", retry=True)
        # The client's requests one at a time, in the order they came (an unsubscribe
        # sent while a subscription is being authorized comes after it).
        with client.lock:
            if room not in client.subscribed and len(client.subscribed) >= (
                self.settings.max_subscriptions
            ):
                limit = self.settings.max_subscriptions
                return self._refuse(client, room, f"too many rooms (limit {limit})")
            if not self.authorize(user, room):
                return self._refuse(client, room, NOT_ALLOWED)
            if sid not in self.catchup.clients:
                return self._refuse(client, room, "not connected")
            answer = self.catchup.subscribe(client, room, request)
            if self.presence is not None:
                self.presence.join(sid, client.namespace, room, user.name)
        log.info(
            "socket.subscribed",
            extra={"sid": sid, "user": user.name, "room": room, **answer},
        )
        return {"ok": True, "room": room, **answer}

    def unsubscribe(self, sid: str, request: Any) -> dict[str, Any]:
        client, room, refused = self._check(sid, request)
        if refused is not None:
            return refused
        assert client is not None and room is not None
        with client.lock:
            if room not in client.subscribed:
                return self._refuse(client, room, "not subscribed on request")
            self.catchup.unsubscribe(client, room)
            if self.presence is not None:
                self.presence.leave(sid, client.namespace, room)
        log.info("socket.unsubscribed", extra={"sid": sid, "user": client.user.name, "room": room})
        return {"ok": True, "room": room}

    def watch_presence(self, sid: str, request: Any) -> dict[str, Any]:
        """Watch a room's presence (and read it), or stop (``"watch": false``)."""
        client, room, refused = self._check(sid, request)
        if refused is not None:
            return refused
        assert client is not None and room is not None
        if self.presence is None:
            return self._refuse(client, room, "presence is off")
        if request.get("watch", True) is False:
            self.presence.unwatch(sid, client.namespace, room)
            return {"ok": True, "room": room, "watching": False}
        try:
            seen = self.presence.watch(sid, client.namespace, room)
        except PresenceUnavailable as exc:
            return self._refuse(client, room, str(exc), retry=True)
        if seen is None:
            # Granted rooms and rooms subscribed on request have presence.
            return self._refuse(client, room, "not subscribed to this room")
        return {"ok": True, "room": room, "users": seen.users, "seq": seen.seq}

    # -- the checks ---------------------------------------------------------------------
    def _check(self, sid: str, request: Any) -> tuple[Client | None, str | None, dict | None]:
        """The client and room of a request, or the refusal."""
        room = request.get("room") if isinstance(request, dict) else None
        error = room_error(room)
        shown = room if error is None else None
        client = self.catchup.clients.get(sid)
        if client is None:
            return None, None, {"ok": False, "room": shown, "reason": "not connected"}
        if client.requests is None:
            rate, burst = self.settings.subscribe_rate, self.settings.subscribe_burst
            client.requests = TokenBucket(rate, burst)
        if not client.requests.take():
            refusal = self._refuse(client, shown, "too many requests; slow down", retry=True)
            return None, None, refusal
        if not isinstance(request, dict):
            return None, None, self._refuse(client, None, "the request must be an object")
        if error is not None:
            return None, None, self._refuse(client, None, error)
        return client, room, None

    def _refuse(
        self, client: Client, room: str | None, reason: str, retry: bool = False
    ) -> dict[str, Any]:
        """A refusal; ``retry``: a passing one (the same request may succeed later)."""
        log.info(
            "socket.subscribe_refused",
            extra={"sid": client.sid, "user": client.user.name, "room": room, "reason": reason},
        )
        answer: dict[str, Any] = {"ok": False, "room": room, "reason": reason}
        if retry:
            answer["retry"] = True
        return answer

    def _wait_not_held(self, client: Client) -> bool:
        """Wait out the client's connect catch-up (or a re-sync): one catch-up at a time."""
        return self.catchup.ledger.wait_released(client.sid, BUSY_WAIT_S)


def with_time_limit(
    ask: Callable[[str, str], Any],
    timeout_s: float,
    start: Callable[..., Any],
    context: Callable[[], Any],
) -> MaySubscribe:
    """The app's hook ``ask(user_id, room)``, run in a green thread of its own (``start``)
    inside ``context()`` (the app's context): ``True`` within ``timeout_s`` is yes,
    anything else (an exception, a late answer) is no."""

    def authorize(viewer: Viewer, room: str) -> bool:
        done = threading.Event()
        answer: list[bool] = []

        def run() -> None:
            try:
                with context():
                    answer.append(ask(viewer.name, room) is True)
            except Exception as exc:  # a failing hook refuses; it never lets through
                log.warning(
                    "socket.authorize_failed",
                    extra={"user": viewer.name, "room": room, "error": str(exc)[:200]},
                )
            finally:
                done.set()

        start(run)
        if not done.wait(timeout_s):
            log.warning(
                "socket.authorize_timed_out",
                extra={"user": viewer.name, "room": room, "timeout_s": timeout_s},
            )
            return False
        return bool(answer) and answer[0]

    return authorize
