"""A Flask app with its own Flask-Login login that embeds streambridge.

Run (with a bridge and Redis running, e.g. from `streambridge dev`):

    export SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python examples/host_app/app.py --port 5001

Users: alice and bob, password from HOST_APP_PASSWORD (default: wonderland-demo).
"""

from streambridge.async_mode import prepare

prepare()  # eventlet monkey-patches before anything else imports sockets

import argparse  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402

from flask import Flask, redirect, render_template, request, url_for  # noqa: E402
from flask_login import (  # noqa: E402
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)

from streambridge import PresenceUnavailable, PublishRefused, StreamBridge  # noqa: E402

PASSWORD = os.environ.get("HOST_APP_PASSWORD", "wonderland-demo")
TEAMS = {"alice": ["team:blue"], "bob": []}
ORDERS = {"alice": ["1001", "1002"], "bob": ["2002"]}  # whose orders are whose
ADMINS = {"alice"}  # who sees the operator dashboard (/streambridge/dashboard)


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
app.config["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

login_manager = LoginManager(app)
login_manager.login_view = "login"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return User(user_id) if user_id in TEAMS else None


# The whole integration: sockets, per-user rooms, catch-up, /streambridge.js.
# Flask-Login's current_user decides who may connect; user:<id> is each user's room.
streambridge = StreamBridge(app)


@streambridge.rooms_loader
def rooms_for(user_id: str) -> list[str]:
    return TEAMS.get(user_id, [])


@streambridge.authorize_publish
def may_publish(user_id: str, room: str | None) -> bool:
    # What users may publish through publish_as(): to everyone, their own room and
    # their teams; never into another user's room.
    return room is None or room == f"user:{user_id}" or room in TEAMS.get(user_id, [])


@streambridge.authorize_room
def may_watch(user_id: str, room: str) -> bool:
    # Rooms a page may ask for (sb.subscribe): a user's own orders, while the page is
    # open; asked again after every reconnect, so a revoked order stops.
    kind, _, order = room.partition(":")
    return kind == "order" and order in ORDERS.get(user_id, [])


@streambridge.authorize_admin
def is_admin(user_id: str) -> bool:
    return user_id in ADMINS


@app.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        name = request.form.get("name", "")
        if name in TEAMS and secrets.compare_digest(request.form.get("secret", ""), PASSWORD):
            login_user(User(name))
            return redirect(url_for("home"))
        error = "Unknown user or wrong password."
    return render_template("login.html", error=error), 401 if error else 200


@app.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("login"))


@app.get("/")
@login_required
def home():
    order = request.args.get("order", "")
    return render_template("home.html", user=current_user.id, order=order)


@app.get("/orders/<order>/viewers")
@login_required
def order_viewers(order: str):
    # Who has this order's page open, on every web server (presence).
    room = f"order:{order}"
    if not may_watch(current_user.id, room):
        return {"error": "not your order"}, 403
    try:
        return {"room": room, "viewers": streambridge.presence(room)}
    except PresenceUnavailable as exc:
        return {"error": str(exc)}, 503


@app.post("/notify")
@login_required
def notify():
    # Producing on behalf of the user: authorized by may_publish, validated, appended
    # to the stream (durable); browsers see who sent it in meta.from.
    try:
        stream_id = streambridge.publish_as(
            current_user.id, "message", {"text": request.form["text"]}, request.form.get("room")
        )
    except PublishRefused as exc:
        return {"error": str(exc)}, 403
    return {"id": stream_id}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    from streambridge import run_app
    from streambridge.logging_setup import configure

    configure()  # the application configures logging, never the library

    run_app(app, args.host, args.port)
