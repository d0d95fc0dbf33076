"""The web server's async mode, decided before anything imports sockets.

eventlet must monkey-patch first, so this reads its one setting straight from
the environment (``STREAMBRIDGE_ASYNC_MODE``, the same name WebSettings uses)
without importing pydantic.
"""

from __future__ import annotations

import os

ENV = "STREAMBRIDGE_ASYNC_MODE"


def prepare() -> str:
    mode = os.environ.get(ENV, "eventlet").strip().lower() or "eventlet"
    if mode == "eventlet":
        import warnings

        with warnings.catch_warnings():
            # eventlet announces its own deprecation on import; threading is the fallback.
            warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
            import eventlet

        eventlet.monkey_patch()
    return mode
