"""The gevent server writes WebSocket data frames itself: a real WebSocket client
implementation (wsproto, the one simple-websocket uses) must read them back."""

from __future__ import annotations

import pytest
from streambridge.webapp.ext.gevent_guard import _FrameWriter, frame_header
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage


class Recorder:
    def __init__(self) -> None:
        self.data = b""

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)


class FakeServer:
    connected = True
    close_reason = close_message = None

    def __init__(self) -> None:
        self.sock = Recorder()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
@pytest.mark.parametrize("kind", [str, bytes])
def test_frames_are_read_back_by_a_websocket_client(size, kind):
    server = FakeServer()
    if kind is str:
        payload = "é" * (size // 2) + "x" * (size % 2)  # multi-byte UTF-8
    else:
        payload = bytes(i % 251 for i in range(size))
    _FrameWriter(server)(payload)
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(server.sock.data)
    events = list(client.events())
    message = b"" if kind is bytes else ""
    for event in events:
        assert isinstance(event, TextMessage if kind is str else BytesMessage)
        message += event.data
    assert message == payload
    assert events[-1].message_finished


def test_header_lengths():
    assert frame_header(0x81, 125) == b"\x81\x7d"
    assert frame_header(0x81, 126) == b"\x81\x7e\x00\x7e"
    assert frame_header(0x82, 65_536) == b"\x82\x7f" + (65_536).to_bytes(8, "big")


def test_a_closed_connection_refuses_to_send():
    from simple_websocket import ConnectionClosed

    server = FakeServer()
    server.connected = False
    with pytest.raises(ConnectionClosed):
        _FrameWriter(server)("x")
    assert server.sock.data == b""


class CountingRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def send(self, data: bytes) -> int:
        self.writes += 1
        return super().send(data)


class FakeEngineIOSocket:
    """python-engineio's Socket as the writer sees it: poll() hands over what is queued."""

    def __init__(self, batches: list[list[str]]) -> None:
        self.batches = batches

    def poll(self) -> list[str]:
        return self.batches.pop(0) if self.batches else []


def test_the_frames_of_one_poll_are_written_together_and_in_order():
    server = FakeServer()
    server.sock = CountingRecorder()
    server.close = lambda: None
    writer = _FrameWriter(server)
    eio = FakeEngineIOSocket([["a", "b", "c"], ["d"]])
    writer("hello")  # before the writer's loop (the handshake): at once
    writer.coalesce(eio)
    assert server.sock.writes == 1
    while packets := eio.poll():  # python-engineio's writer loop
        for packet in packets:
            writer(packet)
    server.close()  # the writer closes when poll() returns nothing
    assert server.sock.writes == 3  # hello, then a+b+c, then d
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(server.sock.data)
    assert [e.data for e in client.events()] == ["hello", "a", "b", "c", "d"]


def test_what_is_left_is_written_before_the_close():
    server = FakeServer()
    closed_with = []
    server.close = lambda *a: closed_with.append(server.sock.data)
    writer = _FrameWriter(server)
    eio = FakeEngineIOSocket([["x", "y"]])
    writer.coalesce(eio)
    for packet in eio.poll():
        writer(packet)
    assert server.sock.data == b""  # kept until the writer polls again or closes
    server.close()
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(closed_with[0])
    assert [e.data for e in client.events()] == ["x", "y"]


# -- writing through to idle writers -----------------------------------------------------
class StubEngineIOServer:
    ping_interval = 25
    ping_timeout = 20
    logger = __import__("logging").getLogger("tests.engineio")

    def create_queue(self):
        import gevent.queue

        return gevent.queue.JoinableQueue()

    def get_queue_empty_exception(self):
        import gevent.queue

        return gevent.queue.Empty


class WebSocketEnds:
    """A server's simple-websocket as the writer sees it, over a real socket pair."""

    def __init__(self, sndbuf: int | None = None) -> None:
        import socket

        import gevent.socket
        from streambridge.webapp.ext.gevent_guard import _SendsAll

        self.server_end, self.client_end = gevent.socket.socketpair()
        if sndbuf is not None:
            self.server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        self.sock = _SendsAll(self.server_end)
        self.connected = True
        self.close_reason = self.close_message = None

    def close(self, *args) -> None:
        self.connected = False

    def release(self) -> None:
        self.server_end.close()
        self.client_end.close()


@pytest.fixture
def socket_pairs():
    made: list[WebSocketEnds] = []

    def make(**kwargs) -> WebSocketEnds:
        made.append(WebSocketEnds(**kwargs))
        return made[-1]

    yield make
    for ends in made:
        ends.release()


def engineio_socket_with_writer(ends: WebSocketEnds, upgraded: bool = True):
    """python-engineio's Socket, its writer loop running as in ``_websocket_handler``
    (``upgraded``: the WebSocket is the socket's transport)."""
    import gevent
    from engineio.socket import Socket

    class CountingSocket(Socket):
        wakes = 0

        def poll(self):
            packets = super().poll()
            self.wakes += 1
            return packets

    eio = CountingSocket(StubEngineIOServer(), "sid")
    eio.connected = eio.upgraded = upgraded
    writer = _FrameWriter(ends)
    ends.send = writer
    assert writer.coalesce(eio)
    writer.write_through(eio, ends.server_end._sock)

    def loop():
        while packets := eio.poll():
            for pkt in packets:
                ends.send(pkt.encode())
        ends.close()

    task = gevent.spawn(loop)
    wait_until(lambda: writer._idle)
    return eio, writer, task


def wait_until(condition, timeout: float = 5.0) -> None:
    import time

    import gevent

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.001)


def read_messages(ends: WebSocketEnds, count: int, timeout: float = 10.0) -> list[str]:
    import gevent

    client = ends.__dict__.setdefault("reader", Connection(ConnectionType.CLIENT))
    messages: list[str] = []
    part = ""
    with gevent.Timeout(timeout):
        while len(messages) < count:
            client.receive_data(ends.client_end.recv(65536))
            for event in client.events():
                assert isinstance(event, TextMessage)
                part += event.data
                if event.message_finished:
                    messages.append(part)
                    part = ""
    assert part == ""
    return messages


def message(text: str):
    from engineio import packet

    return packet.Packet(packet.MESSAGE, text)


def test_messages_for_an_idle_writer_go_out_without_waking_it(socket_pairs):
    import gevent

    ends = socket_pairs()
    eio, writer, task = engineio_socket_with_writer(ends)
    wakes = eio.wakes
    shared = message("shared")  # one event's packet, sent to many clients
    for text in ("a", "b"):
        eio.send(message(text))
    eio.send(shared)
    assert writer._corked and not eio.queue.qsize()  # kept until the sender yields
    gevent.sleep(0)
    assert read_messages(ends, 3) == ["4a", "4b", "4shared"]
    assert eio.wakes == wakes  # the writer never woke
    assert shared.streambridge_frame == b"\x81\x074shared"  # framed once for all
    eio.queue.put(None)
    task.join(timeout=5)
    assert task.dead


def test_what_was_kept_goes_before_a_packet_for_the_writer(socket_pairs):
    import gevent
    from engineio import packet

    ends = socket_pairs()
    eio, _, task = engineio_socket_with_writer(ends)
    eio.send(message("a"))
    eio.send(message("b"))
    eio.send(packet.Packet(packet.PING))  # not a message: the writer's, through the queue
    eio.send(message("c"))  # the writer has something queued: after it, through the queue
    gevent.sleep(0)
    assert read_messages(ends, 4) == ["4a", "4b", "2", "4c"]
    eio.queue.put(None)
    task.join(timeout=5)
    assert task.dead


def test_a_client_that_does_not_read_gets_everything_in_order(socket_pairs):
    """The kernel takes part of what was kept: the writer writes the rest first, and
    what comes meanwhile (a ping, more messages) follows it, in order."""
    import gevent
    from engineio import packet

    ends = socket_pairs(sndbuf=4096)
    eio, _, task = engineio_socket_with_writer(ends)
    sent = []
    for round_ in range(40):
        for i in range(5):
            text = f"{round_}.{i}:" + "x" * 3000
            eio.send(message(text))
            sent.append("4" + text)
        if round_ == 20:
            eio.send(packet.Packet(packet.PING))
            sent.append("2")
        gevent.sleep(0)  # the delivering green thread yields: the outbox writes
    received = read_messages(ends, len(sent) + 1)  # at least one NOOP woke the writer
    while "6" in received[-1:] or len([m for m in received if m != "6"]) < len(sent):
        received += read_messages(ends, 1)
    assert [m for m in received if m != "6"] == sent
    assert "6" in received  # the kernel's buffer was full: the writer took over
    assert eio.wakes > 1
    eio.queue.put(None)
    task.join(timeout=5)
    assert task.dead


def test_nothing_is_kept_for_a_websocket_whose_upgrade_failed(socket_pairs):
    """The client stayed on long-polling: its messages go through the queue, to its
    polls, never to the WebSocket it left."""
    ends = socket_pairs()
    eio, writer, task = engineio_socket_with_writer(ends, upgraded=False)
    wakes = eio.wakes
    eio.send(message("a"))
    assert not writer.kept()
    assert eio.queue.qsize() == 1  # queued for the socket's own transport
    assert read_messages(ends, 1) == ["4a"]  # here the test's writer loop took it
    assert eio.wakes == wakes + 1
    eio.queue.put(None)
    task.join(timeout=5)


def test_kept_messages_count_in_the_backlog(socket_pairs):
    import gevent

    ends = socket_pairs()
    eio, _, task = engineio_socket_with_writer(ends)
    for text in ("a", "b", "c"):
        eio.send(message(text))
    assert eio.streambridge_frames.kept() == 3  # what the ledger's backlog adds
    gevent.sleep(0)
    assert eio.streambridge_frames.kept() == 0
    eio.queue.put(None)
    task.join(timeout=5)
