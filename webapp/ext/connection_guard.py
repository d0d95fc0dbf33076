"""Connection-level defences of the eventlet web server, in its HTTP protocol class.

* Per peer address: at most ``max_open`` connections, and at most ``max_unfinished``
  whose request head (request line and headers) has begun to arrive but is not
  complete. Over either cap the connection gets 429 and is closed.
* A request head must be complete within ``head_timeout_s`` of its first byte, however
  slowly it drips (a socket timeout alone restarts with every byte).
* Every request must be answered within ``request_timeout_s``: a handler that waits
  longer is interrupted, its connection closed and the place it waited logged.
  Long-polling GETs wait at most the Socket.IO ping window, so the deadline sits just
  past it. Only a completed WebSocket handshake lifts it (eventlet's ``set_idle``),
  never a header that says "websocket".
* A connection closed with request bytes still unread is closed gently (lingering):
  its writing side first, then what the client still sends is read and dropped for a
  moment, so the client reads the answer instead of a TCP reset.

Imported only under eventlet, after it has monkey-patched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import traceback
from typing import Any

import eventlet
import eventlet.wsgi
from streambridge.webapp.ext.client_address import address_key
from streambridge.webapp.ext.connection_limits import (
    HEAD_TIMEOUT,
    LINGER_BYTES,
    LINGER_S,
    OVER_CAP_LINGER_S,
    TOO_MANY,
    AddressLimits,
    answer_in_time,
    report_timeout,
)
from streambridge.webapp.ext.request_bounds import refusal

log = logging.getLogger(__name__)


class HeadTimeout(eventlet.Timeout):
    """The request head did not arrive in time."""


class RequestTimeout(eventlet.Timeout):
    """The app did not answer a plain HTTP request in time."""


class _Deadline:
    """A request's deadline: raised in the request's green thread unless lifted first."""

    def __init__(self, seconds: float) -> None:
        self.timer = RequestTimeout(seconds)
        self._lifted = False
        self.reported = False

    def lift(self) -> None:
        self._lifted = True
        self.timer.cancel()

    @property
    def fired(self) -> bool:
        return not self._lifted and not self.timer.pending


def protocol(
    limits: AddressLimits, head_timeout_s: float, request_timeout_s: float, max_body_bytes: int
) -> type[eventlet.wsgi.HttpProtocol]:
    """The HTTP protocol class for ``eventlet.wsgi.server(protocol=...)``."""

    class GuardedProtocol(eventlet.wsgi.HttpProtocol):
        _address = ""
        _head_timer: eventlet.Timeout | None = None
        _linger = False

        def handle(self) -> None:
            self._address = address_key(self.client_address)
            if not limits.open_connection(self._address):
                self._refuse("too many connections from this address")
                # Over the cap: no slot to linger in, only a glance at what arrived.
                self._drop_unread_input(OVER_CAP_LINGER_S)
                self._linger = False
                return
            try:
                super().handle()
                if self._linger:  # still counted against the address while it lingers
                    self._drop_unread_input(LINGER_S)
                    self._linger = False
            finally:
                self._end_head()
                limits.close_connection(self._address)

        def _refuse(self, reason: str) -> None:
            limits.refused(self._address, reason)
            message = reason.encode()
            self._answer_and_close(TOO_MANY % (len(message), message))

        def _answer_and_close(self, response: bytes) -> None:
            with contextlib.suppress(OSError):
                self.wfile.write(response)
                self.wfile.flush()
            self._close_gently()

        def _close_gently(self) -> None:
            """No next request on this connection; unread input is dropped first."""
            self.close_connection = 1
            self._linger = True

        def _drop_unread_input(self, seconds: float) -> None:
            # Closing with unread bytes makes the kernel send a reset, which can reach
            # the client before the answer does.
            conn = self.connection
            with contextlib.suppress(OSError, ValueError, eventlet.Timeout):
                self.wfile.flush()
                conn.shutdown(socket.SHUT_WR)
                with eventlet.Timeout(seconds):
                    dropped = 0
                    while dropped < LINGER_BYTES:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        dropped += len(chunk)

        # -- the request head: from its first byte to its last header ----------------
        def _read_request_line(self) -> Any:
            try:
                # Idle until the next request begins (the socket timeout applies).
                if self.rfile.closed or not self.rfile.peek(1):
                    self.close_connection = 1
                    return ""
            except (OSError, ValueError):
                self.close_connection = 1
                return ""
            if not limits.start_head(self._address):
                self._refuse("too many unfinished requests from this address")
                return ""
            self._head_timer = HeadTimeout(head_timeout_s)
            return super()._read_request_line()

        def parse_request(self) -> bool:
            try:
                return super().parse_request()
            finally:
                self._end_head()

        def _end_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
                limits.end_head(self._address)

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except HeadTimeout:
                limits.refused(self._address, "request head too slow")
                self._answer_and_close(HEAD_TIMEOUT)
            finally:
                self._end_head()

        # -- the answer -----------------------------------------------------------------
        def handle_one_response(self) -> None:
            refused = refusal(
                self.headers.get("content-length"),
                self.headers.get("transfer-encoding"),
                max_body_bytes,
            )
            if refused is not None:
                self._close_gently()  # answered without reading the body: never wait for it
            deadline = _Deadline(request_timeout_s)
            set_idle = self.environ.get("eventlet.set_idle")

            def handshake_done() -> None:
                deadline.lift()  # a WebSocket: long-lived, ended by pings and timeouts
                if set_idle is not None:
                    set_idle()

            self.environ["eventlet.set_idle"] = handshake_done
            self.application = answer_in_time(
                self.application, deadline, functools.partial(self._timed_out, deadline)
            )
            try:
                super().handle_one_response()
            except RequestTimeout as exc:  # past the app: dropping a body
                if exc is not deadline.timer:
                    raise
                self._timed_out(deadline, self.path, traceback.extract_tb(exc.__traceback__))
            finally:
                if deadline.fired and not deadline.reported:
                    self._timed_out(deadline, self.path, None)  # eventlet caught it writing
                deadline.lift()

        def _timed_out(
            self, deadline: _Deadline, path: str, frames: traceback.StackSummary | None
        ) -> None:
            deadline.reported = True
            self._close_gently()
            report_timeout(limits, self._address, path, request_timeout_s, frames)

    return GuardedProtocol
