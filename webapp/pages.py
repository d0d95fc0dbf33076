"""The page, and health."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, render_template, url_for

from webapp.auth import current_user

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    user = current_user()
    if user is None:
        return redirect(url_for("auth.login"))
    settings = current_app.extensions["streambridge.settings"]
    return render_template("index.html", user=user, socketio_path=settings.socketio_path)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
