"""Login and logout against the users file; who is logged in."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from streambridge.webapp.app.logins import LoginRegistry
from streambridge.webapp.app.users import User, UserStore
from streambridge.webapp.ext.identity import Viewer

bp = Blueprint("auth", __name__)
SESSION_LOGIN = "login"


def users() -> UserStore:
    return current_app.extensions["streambridge.users"]


def logins() -> LoginRegistry:
    return current_app.extensions["streambridge.logins"]


def current_user() -> User | None:
    """The user of this request's login, if the login is still alive."""
    login_id = session.get(SESSION_LOGIN)
    if not isinstance(login_id, str):
        return None
    if "streambridge_user" not in g:
        name = logins().user_of(login_id)
        g.streambridge_user = users().get(name) if name else None
    return g.streambridge_user


def current_viewer() -> Viewer | None:
    """The user loader the standalone app gives the StreamBridge extension."""
    user = current_user()
    return user.viewer(session.get(SESSION_LOGIN)) if user is not None else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        name = request.form.get("username", "")
        password = request.form.get("password", "")
        user = users().verify(name, password)
        if user is not None:
            # A fresh session and a fresh server-side login: nothing from before
            # survives (no fixation).
            old = session.get(SESSION_LOGIN)
            if isinstance(old, str):
                logins().end(old)
            session.clear()
            session.permanent = True
            session[SESSION_LOGIN] = logins().create(user.name)
            return redirect(url_for("pages.index"))
        error = "Wrong user name or password."
    status = 401 if error else 200
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout():
    login_id = session.get(SESSION_LOGIN)
    if isinstance(login_id, str):
        logins().end(login_id)  # its sockets, on every server, close within a second
    session.clear()
    return redirect(url_for("auth.login"))
