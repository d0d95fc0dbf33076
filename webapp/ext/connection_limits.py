"""What the web server's connection guards share, whatever the async server: per-address
caps, the canned refusals, and where a timed-out request was waiting.

The servers themselves are in ``connection_guard`` (eventlet) and ``gevent_guard``
(gevent); each is imported only under its own async mode.
"""

from __future__ import annotations

import logging
import sys
import sysconfig
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0
"""At most one refusal log line per address and reason this often (floods stay quiet)."""
LINGER_S = 1.0
LINGER_BYTES = 1 << 20
"""How long, and how much, a refused connection's unread input is read and dropped."""
OVER_CAP_LINGER_S = 0.05
"""The same for a connection over its address's cap (it holds no slot: barely at all)."""

TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 5\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
)
HEAD_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
)


class AddressLimits:
    """Per peer address: open connections and unfinished request heads."""

    def __init__(self, max_open: int | None, max_unfinished: int | None, metrics: Any) -> None:
        self.max_open = max_open
        self.max_unfinished = max_unfinished
        self.metrics = metrics
        self.open: Counter[str] = Counter()
        self.unfinished: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._logged: dict[tuple[str, str], float] = {}

    @staticmethod
    def _take(counts: Counter[str], address: str, cap: int | None) -> bool:
        if cap is not None and counts[address] >= cap:
            return False
        counts[address] += 1
        return True

    @staticmethod
    def _give(counts: Counter[str], address: str) -> None:
        counts[address] -= 1
        if counts[address] <= 0:
            del counts[address]  # the counters hold only addresses in use

    def open_connection(self, address: str) -> bool:
        with self._lock:
            return self._take(self.open, address, self.max_open)

    def close_connection(self, address: str) -> None:
        with self._lock:
            self._give(self.open, address)

    def start_head(self, address: str) -> bool:
        with self._lock:
            return self._take(self.unfinished, address, self.max_unfinished)

    def end_head(self, address: str) -> None:
        with self._lock:
            self._give(self.unfinished, address)

    def refused(self, address: str, reason: str) -> None:
        self.metrics.refused_connections.labels(reason).inc()
        now = time.monotonic()
        key = (address, reason)
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            if len(self._logged) > 10_000:
                self._logged.clear()
            log.warning("web.connection_refused", extra={"address": address, "reason": reason})


def waiting_in(frames: Sequence[traceback.FrameSummary]) -> str:
    """Where code waited: the innermost frame outside the async library and the standard
    library."""
    outside = [f for f in frames if not _plumbing(f.filename)] or list(frames)
    if not outside:
        return "?"
    frame = outside[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"


_STDLIB = sysconfig.get_paths()["stdlib"] + "/"


def _plumbing(filename: str) -> bool:
    return (
        "/eventlet/" in filename
        or "/gevent/" in filename
        or (filename.startswith(_STDLIB) and "site-packages" not in filename)
    )


def answer_in_time(app: Any, deadline: Any, timed_out: Callable[[str, Any], None]) -> Any:
    """``app``, answering 503 when the request's deadline fires inside it.

    ``deadline`` has ``timer`` (the timeout exception the async library raises in the
    request's green thread) and ``fired``; ``timed_out(path, frames)`` reports it (frames:
    where the app was waiting, or None when the app caught the timeout itself)."""

    def answer(environ: dict, start_response: Any) -> Any:
        try:
            result = app(environ, start_response)
        except BaseException as exc:  # the async libraries' timeouts are BaseExceptions
            if exc is not deadline.timer:
                raise
            timed_out(environ.get("PATH_INFO", ""), traceback.extract_tb(exc.__traceback__))
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("Content-Length", "0")],
                sys.exc_info(),
            )
            return [b""]
        if deadline.fired:
            # The app caught the timeout itself (python-engineio's polling POST handler
            # catches everything) and answered: do not then wait for the rest of a body.
            timed_out(environ.get("PATH_INFO", ""), None)
        return result

    return answer


def report_timeout(
    limits: AddressLimits,
    address: str,
    path: str,
    timeout_s: float,
    frames: traceback.StackSummary | None,
) -> None:
    limits.refused(address, "request timed out")
    log.warning(
        "web.request_timeout",
        extra={
            "path": path.split("?", 1)[0][:200],
            "timeout_s": timeout_s,
            "waiting_in": waiting_in(frames) if frames else "caught by the app",
        },
    )
