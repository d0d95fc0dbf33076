"""One green thread sends every connection's pings, instead of one sleeping per connection.

python-engineio schedules each connection's next PING by starting a background task
that sleeps ``ping_interval`` and sends it. A sleeping green thread keeps its stack:
about 8 KB under gevent, a quarter of what an idle connection costs. Here the
connections wait in one queue, due in the order they were scheduled (the interval is
the same for all), and one task sends each PING when it is due, exactly as
``Socket._send_ping`` does.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from engineio import packet

log = logging.getLogger(__name__)

IDLE_CHECK_S = 1.0  # how often an empty queue is looked at again


class SharedPings:
    def __init__(self, eio: Any) -> None:
        self.eio = eio
        self._due: collections.deque[tuple[float, Any]] = collections.deque()
        self._task: Any = None

    def install(self, sock: Any) -> None:
        """Make ``sock`` schedule its pings here (before its first is scheduled)."""

        def schedule_ping() -> None:
            # As python-engineio: a new ping only once the last one was answered.
            if sock.last_ping:
                sock.last_ping = None
                self.schedule(sock)

        sock.schedule_ping = schedule_ping

    def schedule(self, sock: Any) -> None:
        self._due.append((time.monotonic() + self.eio.ping_interval, sock))
        if self._task is None:
            self._task = self.eio.start_background_task(self._run)

    def _run(self) -> None:
        due = self._due
        while True:
            try:
                now = time.monotonic()
                while due and due[0][0] <= now:
                    self._ping(due.popleft()[1])
                wait = due[0][0] - now if due else IDLE_CHECK_S
                self.eio.sleep(max(0.0, min(wait, IDLE_CHECK_S)))
            except Exception:  # the pings of every connection depend on this task
                log.exception("web.ping_failed")
                self.eio.sleep(IDLE_CHECK_S)

    @staticmethod
    def _ping(sock: Any) -> None:
        if sock.closing or sock.closed:
            return
        try:
            sock.last_ping = time.time()
            sock.send(packet.Packet(packet.PING))
        except Exception as exc:  # a closed connection; the others still get theirs
            log.info("web.ping_not_sent", extra={"sid": sock.sid, "error": str(exc)[:200]})


def share_pings(eio: Any) -> SharedPings:
    """Every new connection of ``eio`` gets its pings from one shared task (hooked into
    the ``connect`` handler, which runs before python-engineio schedules the first)."""
    pings = SharedPings(eio)
    connect = eio.handlers.get("connect")

    def on_connect(sid: str, environ: dict, *args: Any) -> Any:
        sock = eio.sockets.get(sid)
        if sock is not None:
            pings.install(sock)
        return connect(sid, environ, *args) if connect is not None else True

    eio.on("connect", on_connect)
    return pings
