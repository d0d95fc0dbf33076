"""``POST /api/``: a logged-in user appends an event to the stream (a producer); with an
``Idempotency-Key`` header, a retry answers the first event's id and nothing is added.
``GET /api/presence?room=``: who is connected to a room.
``GET /api/history?room=&limit=&before=``: a room's newest events, newest first.

The user may publish only where the users file lets it (by default: where it may
receive), never with a reserved channel, and the event carries its name (``meta.from``).
It may read the presence of the rooms it may have: its granted rooms and those its
``subscribe`` patterns match.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from streambridge.webapp.app.auth import current_user, current_viewer
from streambridge.webapp.ext.extension import PublishRefused, state
from streambridge.webapp.ext.presence_keeper import PresenceUnavailable

from streambridge.contract import ContractError, room_error
from streambridge.publisher import Publisher

bp = Blueprint("api", __name__)


def error(status: int, message: str):
    return jsonify({"status": False, "error": message}), status


@bp.after_request
def count(response):
    state().metrics.api_requests.labels(str(response.status_code)).inc()
    return response


@bp.post("/api/")
def post_event():
    # Who first: an anonymous caller learns nothing about input rules.
    viewer = current_viewer()
    if viewer is None:
        return error(401, "login required")
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        current_app.extensions["streambridge.csrf"].protect()  # cross-site posts stop here
    if request.mimetype != "application/json":  # exactly; not application/evil+json
        return error(415, "send JSON (Content-Type: application/json)")
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        return error(400, "request body is nested too deeply")
    if data is None:
        return error(400, "request body is not valid JSON")
    if not isinstance(data, dict):
        return error(400, "must be an object with channel and body")
    if "from" in data:
        return error(400, "from: set by the server to who is logged in")
    if data.get("namespace", "/") not in ("/", None):
        return error(400, "namespace: this app serves only /")
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        # A retried POST: the same key answers the first event's id, delivered once.
        data = {**data, "idempotency_key": key}
    sb = state()
    publisher: Publisher = sb.publisher
    try:
        event = publisher.event_from_item({**data, "from": viewer.name})
        stream_id = sb.extension.publish_event_as(viewer, event)
    except ContractError as exc:
        return error(400, exc.reason)
    except PublishRefused as exc:
        return error(403, str(exc))
    return jsonify({"status": True, "id": stream_id})


def unreadable(viewer, room: str | None):
    """The answer refusing ``viewer`` the room (None: it may read it): a room name that
    breaks the rules, or one it could not receive (as live delivery: the broadcast, its
    own room, granted rooms and those it may subscribe to; never another user's)."""
    if room is None:
        return None  # the broadcast
    problem = room_error(room)
    if problem is not None:
        return error(400, problem)
    if not state().extension.may_subscribe(viewer, room):
        return error(403, f"{viewer.name} may not see room {room!r}")
    return None


@bp.get("/api/history")
def history():
    viewer = current_viewer()
    if viewer is None:
        return error(401, "login required")
    room = request.args.get("room") or None  # absent: the broadcast
    refused = unreadable(viewer, room)
    if refused is not None:
        return refused
    asked = request.args.get("limit")
    try:
        limit = None if asked is None else int(asked)
    except ValueError:
        return error(400, "limit: a whole number")
    try:
        page = state().extension.history(room, limit, request.args.get("before"))
    except ValueError as exc:
        return error(400, str(exc))
    return jsonify({"status": True, **page})


@bp.get("/api/presence")
def presence():
    viewer = current_viewer()
    if viewer is None:
        return error(401, "login required")
    room = request.args.get("room")
    if room is None:
        return error(400, "room: say which room (?room=...)")
    refused = unreadable(viewer, room)
    if refused is not None:
        return refused
    sb = state()
    if sb.presence is None:
        return error(404, "presence is off (STREAMBRIDGE_PRESENCE=false)")
    try:
        seen = sb.presence.read("/", room)
    except PresenceUnavailable as exc:
        return error(503, str(exc))
    return jsonify({"status": True, "room": room, "users": seen.users, "seq": seen.seq})


def user_key() -> str:
    """The rate-limit key of an ``/api/`` call: the user, over all its logins."""
    user = current_user()
    return f"user:{user.name}" if user is not None else f"address:{request.remote_addr}"
