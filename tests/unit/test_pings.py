"""One task pings every connection (``pings``): python-engineio's sockets, a server
stub whose background tasks are threads."""

from __future__ import annotations

import threading
import time

from engineio import packet
from engineio.socket import Socket
from streambridge.webapp.ext.pings import SharedPings

from tests.support import wait_until


class StubServer:
    ping_interval = 0.05
    ping_timeout = 5
    logger = __import__("logging").getLogger("tests.engineio")

    def __init__(self) -> None:
        self.tasks = 0

    def create_queue(self):
        import queue

        return queue.Queue()

    def get_queue_empty_exception(self):
        import queue

        return queue.Empty

    def start_background_task(self, target, *args):
        self.tasks += 1
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        return thread

    def sleep(self, seconds):
        time.sleep(seconds)

    def _trigger_event(self, *args, **kwargs):
        return None


def pings_of(sock: Socket) -> int:
    count = 0
    while not sock.queue.empty():
        count += sock.queue.get().packet_type == packet.PING
    return count


def test_every_connection_is_pinged_by_one_task_and_again_once_it_answers():
    server = StubServer()
    shared = SharedPings(server)
    sockets = [Socket(server, f"s{i}") for i in range(50)]
    for sock in sockets:
        shared.install(sock)
        sock.schedule_ping()  # as python-engineio does after the handshake
    wait_until(lambda: all(s.last_ping for s in sockets), 5, "a ping to every connection")
    assert [pings_of(s) for s in sockets] == [1] * 50
    assert server.tasks == 1  # not one per connection
    time.sleep(3 * server.ping_interval)
    assert [pings_of(s) for s in sockets] == [0] * 50  # none answered: no second ping
    for sock in sockets[:10]:
        sock.receive(packet.Packet(packet.PONG))
    wait_until(lambda: all(s.last_ping for s in sockets[:10]), 5, "the next pings")
    assert [pings_of(s) for s in sockets] == [1] * 10 + [0] * 40
    assert server.tasks == 1


def test_a_closed_connection_is_not_pinged_and_the_others_still_are():
    server = StubServer()
    shared = SharedPings(server)
    closed, broken, alive = (Socket(server, n) for n in ("closed", "broken", "alive"))

    def refuse(pkt):
        raise RuntimeError("gone")

    broken.send = refuse
    for sock in (closed, broken, alive):
        shared.install(sock)
    # Closed before the first ping is due: set after scheduling, a test thread held up
    # longer than the ping interval (a loaded machine) saw it pinged while still open.
    closed.closed = True
    for sock in (closed, broken, alive):
        sock.schedule_ping()
    wait_until(lambda: alive.last_ping, 5, "the live connection's ping")
    assert pings_of(alive) == 1
    assert pings_of(closed) == 0
