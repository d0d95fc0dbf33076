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
