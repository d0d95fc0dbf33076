"""``streambridge web``: the standalone app under the extension's async server.

Imported only after gevent or eventlet has monkey-patched (``streambridge.async_mode.prepare``).
"""

from __future__ import annotations

import sys

from streambridge.webapp.app import ConfigError, create_app
from streambridge.webapp.ext.server import run_app

from streambridge.settings import WebSettings


def serve(settings: WebSettings) -> int:
    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_app(app, settings.host, settings.port)
    return 0
