"""WSGI middleware that refuses request bodies the app will not read, before anything
behind it (python-engineio, Flask) sees the request.

* ``Content-Length`` over the limit: 413 at once, the body unread. python-engineio
  would instead close the polling session and wait, inside the request handler, for a
  poll that may never come (the handler then never returns).
* A body without ``Content-Length`` (``Transfer-Encoding: chunked``): 411. Browsers
  never send one; Flask and python-engineio would read it as empty.
* A ``Content-Length`` that is not a number: 400.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


class RequestBounds:
    def __init__(self, wsgi_app: Any, max_bytes: int, prefix: str | None = None) -> None:
        """Bound requests under ``prefix`` (every request when None)."""
        self.wsgi_app = wsgi_app
        self.max_bytes = max_bytes
        self.prefix = prefix

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        if self.prefix is None or environ.get("PATH_INFO", "").startswith(self.prefix):
            refused = refusal(
                environ.get("CONTENT_LENGTH"),
                environ.get("HTTP_TRANSFER_ENCODING"),
                self.max_bytes,
            )
            if refused is not None:
                status, message = refused
                log.info(
                    "web.request_refused",
                    extra={
                        "status": status,
                        "reason": message,
                        "path": environ.get("PATH_INFO", "")[:200],
                    },
                )
                body = json.dumps({"status": False, "error": message}).encode()
                start_response(
                    status,
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ],
                )
                return [body]
        return self.wsgi_app(environ, start_response)


def refusal(
    content_length: str | None, transfer_encoding: str | None, max_bytes: int
) -> tuple[str, str] | None:
    """The one rule for request bodies: (status, reason) if refused, else None."""
    if (transfer_encoding or "").strip().lower() not in ("", "identity"):
        return "411 Length Required", "send the request body with a Content-Length"
    length = (content_length or "").strip()
    if not length:
        return None
    if not (length.isascii() and length.isdigit()):
        return "400 Bad Request", "Content-Length is not a number"
    if len(length) > 18 or int(length) > max_bytes:
        return "413 Request Entity Too Large", "request body too large"
    return None
