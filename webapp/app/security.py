"""The standalone app's web defences: CSRF, rate limits, cookie flags, proxies.

* CSRF (Flask-WTF): forms carry a hidden ``csrf_token``, the page a
  ``<meta name="csrf-token">`` that scripts send as ``X-CSRFToken``. ``/api/`` checks
  it after the login check, so an anonymous call still gets 401 first.
* Rate limits (Flask-Limiter, counters in Redis): ``/login`` per client address,
  ``/api/`` per user (all its logins together); 429 with ``Retry-After``.
* The session cookie is ``Secure`` whenever the request came over https.
* Every page and static file carries a strict Content-Security-Policy (no inline
  script), ``X-Frame-Options: DENY``, ``nosniff`` and a same-origin referrer policy.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from streambridge.webapp.app.rate_limit_storage import SCHEME
from werkzeug.middleware.proxy_fix import ProxyFix

from streambridge.redis_conn import limiter_storage
from streambridge.settings import WebSettings

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = "; ".join(
    [
        # The page and the client script are files of this app: no inline script,
        # no other origin, no plugins, no framing (clickjacking).
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",  # the socket and /api/, this origin only (ws: and wss: too)
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class _SecureWhenHttps(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def protect(app: Flask, settings: WebSettings, *, memory_limits: bool = False) -> None:
    from streambridge.webapp.app import api, auth

    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.session_interface = _SecureWhenHttps()

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    csrf.init_app(app)
    csrf.exempt(api.bp)  # checked in the view, after the login check
    dashboard = app.blueprints.get("streambridge_dashboard")
    if dashboard is not None:
        csrf.exempt(dashboard)  # checked in the view too, after the admin check
    app.extensions["streambridge.csrf"] = csrf

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        if request.path.startswith("/api/"):
            return jsonify({"status": False, "error": exc.description}), 400
        return exc.description, 400

    storage_uri, storage_options = (
        ("memory://", {})
        if memory_limits
        else limiter_storage(settings.redis_url, cluster=settings.cluster)
    )
    if storage_uri.startswith("redis+cluster"):
        storage_options = {"target_uri": storage_uri, **storage_options}
        storage_uri = f"{SCHEME}://"
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=storage_uri,
        storage_options=storage_options,
        strategy="fixed-window",
        headers_enabled=True,
        key_prefix="streambridge:limits",
    )
    # The limits live in the wrapper the decorator returns: it must be what is served.
    if settings.login_rate_limit:
        app.view_functions["auth.login"] = limiter.limit(
            settings.login_rate_limit, methods=["POST"]
        )(auth.login)
    if settings.api_rate_limit:
        for view in (api.post_event, api.presence, api.history):
            app.view_functions[f"api.{view.__name__}"] = limiter.limit(
                settings.api_rate_limit, key_func=api.user_key
            )(view)

    @app.errorhandler(413)
    def too_large(exc):
        if request.path.startswith("/api/"):
            return jsonify({"status": False, "error": "request body too large"}), 413
        return "Request body too large.", 413

    @app.errorhandler(429)
    def too_many(exc):
        if request.path.startswith("/api/"):
            return jsonify({"status": False, "error": f"too many requests: {exc.description}"}), 429
        return f"Too many requests ({exc.description}); try again later.", 429
