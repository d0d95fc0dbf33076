"""The web server's async mode, decided before anything imports sockets.

gevent and eventlet must monkey-patch first, so this reads its one setting straight from
the environment (``STREAMBRIDGE_ASYNC_MODE``, the same name WebSettings uses)
without importing pydantic.
"""

from __future__ import annotations

import os

ENV = "STREAMBRIDGE_ASYNC_MODE"
MODES = ("gevent", "eventlet", "threading")
DEFAULT = "gevent"
"""The one place the default is decided (WebSettings uses it too): gevent, maintained
upstream and the fastest here (bench/RESULTS.md)."""


def prepare() -> str:
    mode = os.environ.get(ENV, DEFAULT).strip().lower() or DEFAULT
    if mode == "gevent":
        from gevent import monkey

        monkey.patch_all()
    elif mode == "eventlet":
        import warnings

        with warnings.catch_warnings():
            # eventlet announces its own deprecation on import; threading is the fallback.
            warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
            import eventlet

        eventlet.monkey_patch()
    return mode
