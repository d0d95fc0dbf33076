"""The web app: login, ``/api/``, the page, and Socket.IO fed by the queue.

from webapp import create_app
app = create_app()
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

from producers.publish import Publisher
from streambridge.redis_conn import connect
from streambridge.settings import WebSettings
from webapp.catchup import CatchUp
from webapp.queue_manager import StreamQueueManager
from webapp.users import UserStore

MIN_SECRET_KEY_CHARS = 32
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class ConfigError(RuntimeError):
    """The web app cannot start with these settings; the message says why."""


def create_app(
    settings: WebSettings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    settings = settings or WebSettings()
    app = Flask(__name__, template_folder=str(_templates_dir()))
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)

    client = connect(settings.redis_url)
    app.extensions["streambridge.settings"] = settings
    app.extensions["streambridge.redis"] = client
    app.extensions["streambridge.users"] = UserStore(settings.users_file)
    app.extensions["streambridge.publisher"] = Publisher(client, settings)

    from webapp import api, auth, pages, sockets

    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)

    manager = StreamQueueManager(settings.redis_url, channel=settings.queue_channel)
    socketio = SocketIO(
        app,
        async_mode=settings.async_mode,
        path=settings.socketio_path.lstrip("/"),
        client_manager=manager,
        max_http_buffer_size=settings.max_request_bytes,
        # Same-origin only (python-socketio compares Origin with Host).
        cors_allowed_origins=None,
    )
    catchup = CatchUp(client, manager, settings)
    app.extensions["streambridge.catchup"] = catchup
    sockets.register(socketio, catchup)
    return app


def get_socketio(app: Flask) -> SocketIO:
    return app.extensions["socketio"]


def _secret_key(settings: WebSettings) -> str:
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value()
        if len(key) < MIN_SECRET_KEY_CHARS and not settings.dev:
            raise ConfigError(
                f"STREAMBRIDGE_SECRET_KEY is {len(key)} characters; use at least "
                f"{MIN_SECRET_KEY_CHARS} (e.g. python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
        return key
    if settings.dev:
        return secrets.token_hex(32)
    raise ConfigError(
        "STREAMBRIDGE_SECRET_KEY is not set; set it to a random string of at least "
        f"{MIN_SECRET_KEY_CHARS} characters (only `streambridge dev` makes one up)"
    )


def _templates_dir() -> Path:
    if TEMPLATES.is_dir():
        return TEMPLATES
    import templates  # installed (non-editable): the package holds the files

    return Path(templates.__file__).resolve().parent
