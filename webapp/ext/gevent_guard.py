"""The gevent web server, with the same connection-level defences as the eventlet one
(``connection_guard``), in its WSGI handler class:

* per peer address, at most ``max_open`` connections and ``max_unfinished`` request
  heads under way (over either cap: 429, closed);
* a request head complete within ``head_timeout_s`` of its first byte;
* every request answered within ``request_timeout_s`` (a WebSocket is exempt once its
  handshake is done, see ``WEBSOCKET_OPEN``);
* a refused connection is closed gently: its unread input is read and dropped for a
  moment, so the client reads the answer instead of a TCP reset.

WebSockets go through python-engineio's simple-websocket driver (no gevent-websocket).
Imported only under gevent, after it has monkey-patched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import traceback
from typing import Any

import gevent
from engineio import packet as eio_packet
from gevent.pywsgi import WSGIHandler
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

WEBSOCKET_OPEN = "streambridge.websocket_open"
"""environ key: called once a WebSocket handshake is done (lifts the request deadline)."""
RAW_SOCKET = "streambridge.socket"
"""environ key: the connection's socket (to cut a client that does not read)."""
RELEASE_SOCKET = "streambridge.release_socket"
"""environ key: called once simple-websocket works on its own duplicate of the socket."""


class HeadTimeout(gevent.Timeout):
    """The request head did not arrive in time."""


class RequestTimeout(gevent.Timeout):
    """The app did not answer a plain HTTP request in time."""


class _Deadline:
    """A request's deadline: raised in the request's greenlet unless lifted first."""

    def __init__(self, seconds: float) -> None:
        self.timer = RequestTimeout(seconds)
        self.timer.start()
        self._lifted = False
        self.reported = False

    def lift(self) -> None:
        self._lifted = True
        self.timer.close()

    @property
    def fired(self) -> bool:
        return not self._lifted and not self.timer.pending


def handler_class(
    limits: AddressLimits,
    *,
    idle_timeout_s: float,
    head_timeout_s: float,
    request_timeout_s: float,
    max_body_bytes: int,
) -> type[WSGIHandler]:
    """The handler class for ``gevent.pywsgi.WSGIServer(handler_class=...)``."""

    class GuardedHandler(WSGIHandler):
        _address = ""
        _head_timer: gevent.Timeout | None = None
        _lingering = False

        def handle(self) -> None:
            self._address = address_key(self.client_address)
            # gevent's default is no timeout: a client that stops halfway would hold
            # its connection for ever. A live Socket.IO client is never idle this long.
            self.socket.settimeout(idle_timeout_s)
            if not limits.open_connection(self._address):
                self._refuse("too many connections from this address", OVER_CAP_LINGER_S)
                self._close()
                return
            try:
                super().handle()
            finally:
                self._end_head()
                limits.close_connection(self._address)

        def _close(self) -> None:
            with contextlib.suppress(OSError):
                self.socket.close()
            self.__dict__.pop("socket", None)
            self.__dict__.pop("rfile", None)

        def _refuse(self, reason: str, linger_s: float = LINGER_S) -> None:
            limits.refused(self._address, reason)
            message = reason.encode()
            self._answer_and_linger(TOO_MANY % (len(message), message), linger_s)

        def _answer_and_linger(self, response: bytes, linger_s: float = LINGER_S) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError, ValueError):
                self.socket.sendall(response)
            self._linger(linger_s)

        def _close_gently(self) -> None:
            """No next request on this connection, and its unread body is not waited
            for (gevent would read it all, however slowly it comes): it is dropped
            for a moment once the answer is out."""
            self.close_connection = True
            self._lingering = True
            wsgi_input = getattr(self, "wsgi_input", None)
            if wsgi_input is not None:
                wsgi_input._chunked_input_error = True  # gevent: skip discarding the body

        def _linger(self, linger_s: float = LINGER_S) -> None:
            # Closing with unread bytes makes the kernel send a reset, which can reach
            # the client before the answer does: shut the writing side, drop what comes.
            sock = self.socket
            with contextlib.suppress(OSError, ValueError, gevent.Timeout):
                sock.shutdown(socket.SHUT_WR)
                with gevent.Timeout(linger_s):
                    dropped = 0
                    while dropped < LINGER_BYTES:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        dropped += len(chunk)

        # -- the request head: from its first byte to its last header ----------------
        def read_requestline(self) -> str:
            try:
                # Idle until the next request begins (the socket timeout applies).
                if self.rfile.closed or not self.rfile.peek(1):
                    return ""
            except (OSError, ValueError):
                return ""
            if not limits.start_head(self._address):
                self._refuse("too many unfinished requests from this address")
                return ""
            self._head_timer = HeadTimeout(head_timeout_s)
            self._head_timer.start()
            return super().read_requestline()

        def read_request(self, raw_requestline: str) -> Any:
            try:
                return super().read_request(raw_requestline)
            finally:
                self._end_head()

        def _end_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.close()
                self._head_timer = None
                limits.end_head(self._address)

        def handle_one_request(self) -> Any:
            try:
                return super().handle_one_request()
            except HeadTimeout:
                limits.refused(self._address, "request head too slow")
                self._answer_and_linger(HEAD_TIMEOUT)
                return None
            finally:
                self._end_head()

        def get_environ(self) -> dict:
            environ = super().get_environ()
            environ[RAW_SOCKET] = self.socket
            environ[RELEASE_SOCKET] = self._release_socket
            return environ

        def _release_socket(self) -> None:
            """Close this handler's socket once a WebSocket runs on simple-websocket's
            duplicate of it: one file descriptor per connection instead of two (at
            10,000 connections, two hit the usual limit of 20,000). The connection
            stays open through the duplicate; nothing more is read here."""
            self.close_connection = True
            wsgi_input = getattr(self, "wsgi_input", None)
            if wsgi_input is not None:
                wsgi_input._chunked_input_error = True  # gevent: skip discarding the body
            with contextlib.suppress(OSError, ValueError):
                self.rfile.close()
                self.socket.close()

        # -- the answer -----------------------------------------------------------------
        def handle_one_response(self) -> None:
            refused = refusal(
                self.headers.get("content-length"),
                self.headers.get("transfer-encoding"),
                max_body_bytes,
            )
            if refused is not None:
                self._close_gently()  # answered without reading the body
            deadline = _Deadline(request_timeout_s)
            upgraded = False

            def websocket_open() -> None:
                nonlocal upgraded
                upgraded = True
                deadline.lift()

            self.environ[WEBSOCKET_OPEN] = websocket_open
            self.application = answer_in_time(
                self.application, deadline, functools.partial(self._timed_out, deadline)
            )
            try:
                super().handle_one_response()
            finally:
                if upgraded:
                    # The WebSocket has ended: what follows on this socket is not HTTP.
                    self.close_connection = True
                if deadline.fired and not deadline.reported:
                    self._timed_out(deadline, self.path, None)  # caught past the app
                deadline.lift()
            if self._lingering:
                self._lingering = False
                self._linger()

        def _timed_out(
            self, deadline: _Deadline, path: str, frames: traceback.StackSummary | None
        ) -> None:
            deadline.reported = True
            self._close_gently()
            report_timeout(limits, self._address, path, request_timeout_s, frames)

    return GuardedHandler


def exempt_websockets_from_the_deadline(eio: Any) -> None:
    """Make python-engineio's WebSocket class call ``WEBSOCKET_OPEN`` once the handshake
    is done: from then on the connection is long-lived, ended by pings and timeouts."""
    base = eio._async["websocket"]
    if base is None or getattr(base, "streambridge_guarded", False):
        return

    class HandshakeAware(base):  # type: ignore[misc, valid-type]
        streambridge_guarded = True

        def __call__(self, environ: dict, start_response: Any) -> Any:
            handler = self.app

            def opened(ws: Any) -> Any:
                environ.get(WEBSOCKET_OPEN, _nothing)()
                inner = getattr(ws, "ws", None)  # the simple_websocket.Server
                if inner is not None and getattr(inner, "sock", None) is not None:
                    duplicate = inner.sock
                    inner.sock = _SendsAll(duplicate)
                    frames = _FrameWriter(inner)
                    inner.send = frames
                    eio_socket = getattr(handler, "__self__", None)
                    if frames.coalesce(eio_socket):
                        frames.write_through(eio_socket, getattr(duplicate, "_sock", None))
                    if getattr(inner, "mode", None) == "gevent":  # it works on a dup
                        environ[RAW_SOCKET] = duplicate
                        environ.get(RELEASE_SOCKET, _nothing)()
                return handler(ws)

            self.app = opened
            return super().__call__(environ, start_response)

    eio._async = dict(eio._async, websocket=HandshakeAware)


class _SendsAll:
    """A socket whose ``send`` sends everything. simple-websocket writes each frame with
    one ``sock.send``; a gevent socket's ``send`` may write only part of it when the
    client's buffer is full, and the rest of the frame would be lost (the stream of
    frames corrupt)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: bytes) -> int:
        # One plain send first: it nearly always takes the whole frame, and gevent's
        # sendall asks the kernel for the buffer size (a system call) every time.
        sent = self._sock.send(data)
        if sent < len(data):
            self._sock.sendall(memoryview(data)[sent:])
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _FrameWriter:
    """``simple_websocket.Server.send`` for the server's data frames, written directly.

    wsproto builds each frame through several layers of Python; the writer sends one
    per packet, to every client, so that was most of the web server's time. A server's
    data frame is only a header and the payload (unmasked, uncompressed: valid whether
    or not permessage-deflate was negotiated), and sending one changes no protocol
    state. Pings and the close still go through wsproto."""

    __slots__ = ("_buffering", "_corked", "_idle", "_pending", "_queue", "_raw", "_ws")

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._pending: list[bytes] = []  # written by the writer, before anything else
        self._buffering = False
        self._corked: list[bytes] = []  # for an idle writer: written by the outbox
        self._idle = False  # the writer waits for packets and has nothing left to write
        self._queue: Any = None
        self._raw: Any = None

    def __call__(self, data: str | bytes) -> None:
        ws = self._ws
        if not ws.connected:
            from simple_websocket import ConnectionClosed

            raise ConnectionClosed(ws.close_reason, ws.close_message)
        frame = data_frame(data)
        if self._buffering:
            self._pending.append(frame)
        else:
            ws.sock.send(frame)

    def flush(self) -> None:
        while self._pending:  # more may come while a slow client takes the last
            data = b"".join(self._pending)
            self._pending.clear()
            self._ws.sock.send(data)

    def coalesce(self, eio_socket: Any) -> bool:
        """One write per client per writer wake-up instead of one per packet.

        python-engineio's writer takes every queued packet (``poll``) and sends them one
        by one; here the frames of one poll are kept and written together when the writer
        polls again (or closes), which is where it would wait. Outside the writer's loop
        (the handshake, the upgrade probe) frames go out at once. False when
        ``eio_socket`` is not python-engineio's socket as expected (nothing changed)."""
        if eio_socket is None or not callable(getattr(eio_socket, "poll", None)):
            return False
        poll = eio_socket.poll
        ws = self._ws

        def flushing_poll() -> list:
            self._buffering = False
            try:
                self.flush()
            except Exception:  # the connection is gone: the writer ends and closes
                self._pending.clear()
                return []
            self._idle = True
            try:
                packets = poll()
            finally:
                self._idle = False
            self._uncork()
            self._buffering = True
            return packets

        close = ws.close

        def flushing_close(*args: Any, **kwargs: Any) -> Any:
            self._buffering = False
            self._uncork()
            with contextlib.suppress(Exception):
                self.flush()
            return close(*args, **kwargs)

        eio_socket.poll = flushing_poll
        ws.close = flushing_close
        return True

    def write_through(self, eio_socket: Any, raw: Any) -> None:
        """Messages for a client whose writer is idle are written without waking it.

        Waking a writer costs far more than its write (a green thread switch, the
        queue's wait and its timer): with 10,000 clients one broadcast took most of a
        second. A message for an idle writer is kept here instead (``corked``) and the
        ``_OUTBOX`` writes what each client got once the delivering green thread
        yields: one non-blocking system call per client per round, no switch. What
        the kernel does not take goes to the writer, woken then, which writes it
        before anything else; anything else (pings, the close, messages while the
        writer is busy) goes through the queue as before, after what was kept."""
        queue = getattr(eio_socket, "queue", None)
        if raw is None or queue is None or raw.gettimeout() != 0.0:
            return  # not a non-blocking socket: the writer does every write
        self._queue = queue
        self._raw = raw
        queued = eio_socket.send
        ws = self._ws
        check = eio_socket.check_ping_timeout

        def send(pkt: Any) -> None:
            if (
                self._idle
                and eio_socket.upgraded  # not a WebSocket whose upgrade failed
                and pkt.packet_type == eio_packet.MESSAGE
                and not queue.qsize()
                and ws.connected
            ):
                if check():
                    if not self._corked:
                        _OUTBOX.add(self)
                    self._corked.append(message_frame(pkt))
                return
            self._uncork()  # what was kept goes first
            queued(pkt)

        eio_socket.send = send
        eio_socket.streambridge_frames = self  # its backlog counts what is kept here

    def kept(self) -> int:
        """Messages kept for the outbox (not yet written)."""
        return len(self._corked)

    def _uncork(self) -> None:
        if self._corked:
            self._pending.extend(self._corked)
            self._corked.clear()

    def write_corked(self) -> None:
        """The outbox's turn: write what was kept, without ever waiting."""
        if not self._corked:
            return
        data = b"".join(self._corked)
        self._corked.clear()
        if not self._ws.connected:
            return
        if not self._idle or self._pending or self._queue.qsize():
            self._pending.append(data)  # the writer is at work: it writes this first
            return
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the connection is gone: its reader and writer find out and close
        if sent < len(data):
            self._pending.append(data[sent:])
            self._queue.put(eio_packet.Packet(eio_packet.NOOP))  # wake the writer


class _Outbox:
    """The writers with kept messages, written in one hub callback: it runs once the
    green thread delivering them yields (before the writers it woke run)."""

    def __init__(self) -> None:
        self._writers: list[_FrameWriter] = []

    def add(self, writer: _FrameWriter) -> None:
        if not self._writers:
            gevent.get_hub().loop.run_callback(self._write_all)
        self._writers.append(writer)

    def _write_all(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            try:
                writer.write_corked()
            except Exception:  # one client must never stop the others' writes
                log.exception("websocket.write_failed")


_OUTBOX = _Outbox()


def data_frame(data: str | bytes) -> bytes:
    """A whole unmasked data frame: text for ``str``, binary for ``bytes``."""
    if isinstance(data, str):
        payload, opcode = data.encode(), 0x81  # FIN + text
    else:
        payload, opcode = bytes(data), 0x82  # FIN + binary
    return frame_header(opcode, len(payload)) + payload


def message_frame(pkt: Any) -> bytes:
    """The frame of an engine.io packet, made once: an event's packets are shared by
    all its recipients."""
    frame = pkt.__dict__.get("streambridge_frame")
    if frame is None:
        frame = pkt.streambridge_frame = data_frame(pkt.encode())
    return frame


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked WebSocket frame (RFC 6455, 5.2)."""
    if length < 126:
        return bytes((opcode, length))
    if length < 1 << 16:
        return bytes((opcode, 126)) + length.to_bytes(2, "big")
    return bytes((opcode, 127)) + length.to_bytes(8, "big")


def _nothing() -> None:
    return None
