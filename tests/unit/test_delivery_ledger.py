"""The ledger's decisions, with a courier that records what it is asked to send."""

from __future__ import annotations

from streambridge.webapp.ext.delivery_ledger import DeliveryLedger, RoomReplay

from streambridge.ids import StreamId


class Courier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (sid, position)

    def encode(self, event, data, namespace):
        return [data[1]["id"]]

    def send_packets(self, eio_sid, packets):
        self.sent += [(eio_sid, p) for p in packets]

    def send_to(self, sid, namespace, event, data):
        self.sent.append((sid, data[1]["id"]))

    def backlog(self, eio_sid):
        return 0

    def cut(self, sid, eio_sid):
        raise AssertionError("nobody is shed here")


def deliver(ledger, position, room, sid="a"):
    ledger.deliver([(sid, sid)], "/", 0, StreamId.parse(position), "m", [1, {"id": position}], room)


def test_a_room_replay_drops_only_that_rooms_held_repeats():
    courier = Courier()
    ledger = DeliveryLedger(courier, 100)
    ledger.hold("a")
    deliver(ledger, "5-0", "team:red")  # in the replay: a repeat
    deliver(ledger, "6-0", None)  # another room, same shard: sent
    deliver(ledger, "8-0", "team:red")  # after the replay: sent
    replay = RoomReplay("team:red", 0, StreamId.parse("7-0"))
    assert ledger.release("a", "/", covered={}, start={}, room_replay=replay) == 2
    assert courier.sent == [("a", "6-0"), ("a", "8-0")]
    deliver(ledger, "9-0", "team:red")  # live again
    assert courier.sent[-1] == ("a", "9-0")


def test_a_client_forgotten_while_held_is_not_remembered_again():
    ledger = DeliveryLedger(Courier(), 100)
    ledger.hold("a")
    deliver(ledger, "5-0", None)
    ledger.forget("a")  # it disconnected during its catch-up
    start = {0: StreamId.parse("9-0")}
    assert ledger.release("a", "/", covered=start, start=start) == 0
    assert ledger.positions_of("a") == {}
    assert not ledger.is_held("a")
