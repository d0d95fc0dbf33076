"""The page, and health."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from streambridge.webapp.app.auth import current_user
from streambridge.webapp.ext.extension import state

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    user = current_user()
    if user is None:
        return redirect(url_for("auth.login"))
    settings = state().settings
    return render_template(
        "index.html",
        user=user,
        socketio_path=settings.socketio_path,
        client_script_url=settings.client_script_url,
        granted_rooms=user.viewer().granted_rooms,
    )
