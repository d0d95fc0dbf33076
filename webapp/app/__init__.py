"""The standalone web app: login against a users file, ``POST /api/``, the page, and
streambridge's sockets through the ``StreamBridge`` extension (one code path).

    from streambridge.webapp.app import create_app
    app = create_app()
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import redis
from flask import Flask
from streambridge.webapp.app.logins import LoginRegistry
from streambridge.webapp.app.users import UserStore

from streambridge.settings import WebSettings

MIN_SECRET_KEY_CHARS = 32


class ConfigError(RuntimeError):
    """The web app cannot start with these settings; the message says why."""


def create_app(
    settings: WebSettings | None = None,
    test_config: dict[str, Any] | None = None,
    *,
    redis_client: redis.Redis | None = None,
) -> Flask:
    """The app; ``redis_client`` replaces the one made from ``REDIS_URL`` (for tests)."""
    from streambridge.webapp.app import api, auth, pages
    from streambridge.webapp.app.security import protect
    from streambridge.webapp.ext.extension import StreamBridge, state

    settings = settings or WebSettings()
    app = Flask(__name__, template_folder=str(_templates_dir()))
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime_s,
        # The token lives as long as the session: a page left open stays usable.
        WTF_CSRF_TIME_LIMIT=None,
    )
    if test_config:
        app.config.update(test_config)
    users = UserStore(settings.users_file)
    app.extensions["streambridge.users"] = users
    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    ext = StreamBridge(
        app,
        user_loader=auth.current_viewer,
        settings=settings,
        redis_client=redis_client,
        bound_every_request=True,  # the standalone app's routes are ours too
    )

    @ext.authorize_publish
    def users_file_rules(user_id: str, room: str | None) -> bool:
        if room is None and not settings.api_broadcast:
            return False
        user = users.get(user_id)
        return user is not None and user.may_publish(room)

    @ext.authorize_room
    def users_file_patterns(user_id: str, room: str) -> bool:
        user = users.get(user_id)
        return user is not None and user.may_subscribe(room)

    @ext.authorize_admin
    def users_file_admins(user_id: str) -> bool:
        user = users.get(user_id)
        return user is not None and user.admin

    registry = LoginRegistry(state(app).redis, settings.session_lifetime_s)
    app.extensions["streambridge.logins"] = registry
    state(app).logins_alive = registry.alive
    protect(app, settings, memory_limits=redis_client is not None)
    return app


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
    import streambridge.templates  # a package of data files: top-level ``templates/``

    return Path(streambridge.templates.__file__).resolve().parent
