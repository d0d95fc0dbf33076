"""Login and logout against the users file; who is logged in."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from webapp.identity import Viewer
from webapp.users import User, UserStore

bp = Blueprint("auth", __name__)
SESSION_USER = "user"


def users() -> UserStore:
    return current_app.extensions["streambridge.users"]


def current_user() -> User | None:
    name = session.get(SESSION_USER)
    return users().get(name) if isinstance(name, str) else None


def current_viewer() -> Viewer | None:
    """The user loader the standalone app gives the StreamBridge extension."""
    user = current_user()
    return user.viewer() if user is not None else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        name = request.form.get("username", "")
        password = request.form.get("password", "")
        user = users().verify(name, password)
        if user is not None:
            # A fresh session on login: nothing from before survives (no fixation).
            session.clear()
            session[SESSION_USER] = user.name
            return redirect(url_for("pages.index"))
        error = "Wrong user name or password."
    status = 401 if error else 200
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login"))
