"""``POST /api/``: a logged-in user appends an event to the stream (a producer)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from producers.publisher import Publisher
from streambridge.contract import ContractError
from webapp.auth import current_user
from webapp.extension import state

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
    if current_user() is None:
        return error(401, "login required")
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        current_app.extensions["streambridge.csrf"].protect()  # cross-site posts stop here
    if not request.is_json:
        return error(415, "send JSON (Content-Type: application/json)")
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        return error(400, "request body is nested too deeply")
    if data is None:
        return error(400, "request body is not valid JSON")
    publisher: Publisher = state().publisher
    try:
        event = publisher.event_from_item(data)
    except ContractError as exc:
        return error(400, exc.reason)
    stream_id = publisher.publish_events([event])[0]
    return jsonify({"status": True, "id": stream_id})
