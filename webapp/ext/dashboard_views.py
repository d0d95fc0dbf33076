"""The operator dashboard's pages and actions, under ``STREAMBRIDGE_DASHBOARD_PATH``:

* ``GET  <path>``                   the page (its charts are refreshed over the socket)
* ``GET  <path>/overview``          shards, bridges and the charts' series (JSON)
* ``GET  <path>/dead?count=``       the oldest dead letters of each shard, and the total
* ``GET  <path>/dead/one?stream=&id=``  one dead letter, all its fields
* ``POST <path>/dead/requeue``      ``{"stream", "id"}`` or ``{"all": true}``
* ``POST <path>/dead/delete``       the same

Admins only: 401 without a login, 403 for anyone the ``authorize_admin`` hook does not
answer ``True`` for (without a hook, nobody). Actions are JSON posts with the page's
CSRF token in ``X-CSRFToken`` (Flask-WTF's, checked after the admin check).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, url_for
from flask_wtf.csrf import generate_csrf, validate_csrf
from streambridge.webapp.ext.identity import Viewer
from wtforms import ValidationError

from streambridge import ops
from streambridge.ids import StreamId
from streambridge.redis_conn import ERRORS

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BLUEPRINT = "streambridge_dashboard"
MAX_LIST = 500
PREVIEW_BYTES = 300  # of each field, in the list
INSPECT_BYTES = 256 * 1024  # of each field, when one letter is inspected


def error(status: int, message: str):
    return jsonify({"status": False, "error": message}), status


def blueprint(path: str, client_script_url: str, socketio_path: str) -> Blueprint:
    from streambridge.webapp.ext.extension import state

    bp = Blueprint(
        BLUEPRINT,
        __name__,
        url_prefix=path,
        template_folder=str(HERE / "templates"),
        static_folder=str(HERE / "static"),
        static_url_path="/static",
    )

    def admins_only(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            sb = state()
            try:
                viewer: Viewer | None = sb.extension.current_viewer()  # may read Redis
                if viewer is None:
                    login = _login_url() if request.endpoint == f"{BLUEPRINT}.page" else None
                    return redirect(login) if login else error(401, "login required")
                if not sb.extension.is_admin(viewer):
                    log.warning(
                        "dashboard.refused", extra={"user": viewer.name, "path": request.path}
                    )
                    return error(403, f"{viewer.name} is not an admin")
                g.streambridge_admin = viewer  # for the view: looked up once per request
                if request.method == "POST":
                    try:
                        validate_csrf(request.headers.get("X-CSRFToken"), time_limit=_csrf_age())
                    except ValidationError as exc:  # missing, expired or not this session's
                        return error(400, f"CSRF: {exc}")
                    if request.mimetype != "application/json":
                        return error(415, "send JSON (Content-Type: application/json)")
                return view(*args, **kwargs)
            except ERRORS as exc:
                log.warning("dashboard.redis_failed", extra={"error": str(exc)})
                return error(503, f"redis: {exc}")

        return guarded

    @bp.get("")
    @admins_only
    def page():
        return render_template(
            "streambridge/dashboard.html",
            user=g.streambridge_admin.name,
            csrf_token=generate_csrf(),
            client_script_url=client_script_url,
            socketio_path=socketio_path,
            base=path,
        )

    @bp.get("/overview")
    @admins_only
    def overview():
        return jsonify({"status": True, **state().dashboard.overview()})

    @bp.get("/dead")
    @admins_only
    def dead_list():
        try:
            count = int(request.args.get("count", "100"))
        except ValueError:
            return error(400, "count: a whole number")
        if not 1 <= count <= MAX_LIST:
            return error(400, f"count: 1 to {MAX_LIST}")
        sb = state()
        # The count, then the newest ids ("all" acts up to those): the count a page
        # confirms is never more than what "all" then covers.
        total = ops.dead_letter_count(sb.redis, sb.settings)
        newest = ops.newest_dead(sb.redis, sb.settings)
        letters = ops.dead_letters(sb.redis, sb.settings, count, preview=PREVIEW_BYTES)
        return jsonify({"status": True, "dead_letters": letters, "total": total, "through": newest})

    @bp.get("/dead/one")
    @admins_only
    def dead_one():
        stream, dead_id, problem = _letter_named(request.args)
        if problem is not None:
            return problem
        sb = state()
        try:
            letter = ops.dead_letter(sb.redis, sb.settings, stream, dead_id, INSPECT_BYTES)
        except ValueError as exc:
            return error(404, str(exc))
        if letter is None:
            return error(404, f"no dead letter {dead_id} in {stream}")
        return jsonify({"status": True, "dead_letter": letter})

    @bp.post("/dead/requeue")
    @admins_only
    def dead_requeue():
        return _act("requeue", ops.requeue, lambda moved: {"moved": moved, "count": len(moved)})

    @bp.post("/dead/delete")
    @admins_only
    def dead_delete():
        return _act("delete", ops.delete_dead, lambda deleted: {"count": deleted})

    def _act(name: str, action: Callable[..., Any], answer: Callable[[Any], dict]):
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return error(400, 'send {"stream": ..., "id": ...} or {"all": true}')
        sb = state()
        through = None
        if data.get("all") is True:
            if "id" in data:
                return error(400, 'give "id" or "all", not both')
            stream = data.get("stream")
            if stream is not None and not isinstance(stream, str):
                return error(400, "stream: a stream key")
            through = data.get("through")
            if through is not None and not (
                isinstance(through, dict)
                and all(isinstance(k, str) and _exact_id(v) for k, v in through.items())
            ):
                return error(400, "through: per stream, the newest dead-letter id shown")
            ids = None
        else:
            stream, dead_id, problem = _letter_named(data)
            if problem is not None:
                return problem
            ids = [dead_id]
        try:
            result = action(sb.redis, sb.settings, ids, stream, through)
        except ValueError as exc:
            return error(404, str(exc))
        except KeyError as exc:
            return error(404, f"no dead letter {exc.args[0]} in {stream}")
        log.info(
            f"dashboard.dead_{name}",
            extra={"user": g.streambridge_admin.name, "stream": stream, "ids": ids},
        )
        return jsonify({"status": True, **answer(result)})

    return bp


def _letter_named(source: Any) -> tuple[str, str, Any]:
    """(stream, id, None), or the error answer."""
    stream, dead_id = source.get("stream"), source.get("id")
    if not isinstance(stream, str) or not stream:
        return "", "", error(400, "stream: the dead letter's stream key")
    if not isinstance(dead_id, str):
        return "", "", error(400, "id: the dead letter's id")
    if not _exact_id(dead_id):
        return "", "", error(400, f"id: {dead_id[:40]!r} is not a stream id (ms-seq)")
    return stream, dead_id, None


def _exact_id(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(StreamId.parse(value)) == value  # "5": a range
    except ValueError:
        return False


def _login_url() -> str | None:
    """The app's login page, when it says where it is (Flask-Login's ``login_view``, or
    the standalone app's)."""
    manager = getattr(current_app, "login_manager", None)
    for endpoint in (getattr(manager, "login_view", None), "auth.login"):
        if isinstance(endpoint, str) and endpoint in current_app.view_functions:
            return url_for(endpoint)
    return None


def _csrf_age() -> int | None:
    """How old a page's token may be: the app's ``WTF_CSRF_TIME_LIMIT`` if it sets one
    (None: no limit), else as long as a session lasts, so a dashboard left open stays
    usable (Flask-WTF's own default is an hour)."""
    if "WTF_CSRF_TIME_LIMIT" in current_app.config:
        return current_app.config["WTF_CSRF_TIME_LIMIT"]
    return int(current_app.permanent_session_lifetime.total_seconds())
