"""What each client of this server has been sent, and what it must not be sent yet.

Per client:

* a hold: while it connects or is caught up from the stream, its live stream events
  are kept back, then released in stream order once its replay is done;
* its position: per shard, the newest id it was sent;
* what a replay covered: per shard, up to where it already has everything, so live
  repeats are dropped;
* shedding: a client that cannot keep up is cut off and gets nothing more.

The ledger decides; its ``Courier`` (the queue manager, which has the Socket.IO
server) does the I/O. One lock makes each delivery and each release atomic, so a live
event never overtakes the held events before it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from streambridge.ids import ZERO, StreamId

log = logging.getLogger(__name__)

Held = tuple[int, StreamId, str, list[Any], str | None]  # (shard, id, event, [body, meta], room)


@dataclass(frozen=True)
class RoomReplay:
    """A replay of one room (a subscription with a position): in ``shard`` it sent that
    room's events up to ``through``, so held events of the room up to there are repeats."""

    room: str
    shard: int
    through: StreamId


class Courier(Protocol):
    """The client connections, as the ledger reaches them."""

    def encode(self, event: str, data: list[Any], namespace: str) -> list:
        """The packets of one event (encoded once, sent to every recipient)."""

    def send_packets(self, eio_sid: str, packets: list) -> None: ...

    def send_to(self, sid: str, namespace: str, event: str, data: list[Any]) -> None: ...

    def backlog(self, eio_sid: str) -> int | None:
        """Packets queued for the connection; None when it is gone."""

    def cut(self, sid: str, eio_sid: str) -> None:
        """Drop what is queued for the connection and close it."""


class DeliveryLedger:
    def __init__(self, courier: Courier, max_client_queue: int) -> None:
        self._courier = courier
        self._max_client_queue = max_client_queue
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)  # a client's hold ended
        self._held: dict[str, list[Held]] = {}
        # Per client, per shard: the newest id it was sent.
        self._positions: dict[str, dict[int, StreamId]] = {}
        # Per client, per shard: up to here it already has everything (it was
        # replayed): drop repeats.
        self._covered: dict[str, dict[int, StreamId]] = {}
        self._shedding: set[str] = set()

    @property
    def max_client_queue(self) -> int:
        """Past this many queued packets (or held events) a client is shed."""
        return self._max_client_queue

    # -- live stream events -----------------------------------------------------------
    def deliver(
        self,
        recipients: Iterable[tuple[str, str]],
        namespace: str,
        shard: int,
        stream_id: StreamId,
        event: str,
        data: list[Any],
        room: str | None = None,
    ) -> int:
        """One live stream event (sent to ``room``) to its recipients ``(sid, eio_sid)``:
        sent, held back, dropped as a repeat, or, for a client too far behind, the reason
        to shed it. Returns to how many it was sent now."""
        courier = self._courier
        limit = self._max_client_queue
        packets = None
        sent = 0
        with self._lock:
            for sid, eio_sid in recipients:
                if sid in self._shedding:
                    continue
                held = self._held.get(sid)
                if held is not None:
                    if len(held) >= limit:
                        # Caught up too slowly while live events keep coming: shed it;
                        # it reconnects from its last id.
                        if courier.backlog(eio_sid) is not None:
                            self._shed(sid, eio_sid)
                        continue
                    held.append((shard, stream_id, event, data, room))
                    continue
                covered = self._covered.get(sid)
                if covered is not None and stream_id <= covered.get(shard, ZERO):
                    continue
                backlog = courier.backlog(eio_sid)
                if backlog is not None and backlog > limit:
                    self._shed(sid, eio_sid)
                    continue
                if packets is None:
                    packets = courier.encode(event, data, namespace)
                courier.send_packets(eio_sid, packets)
                sent += 1
                positions = self._positions.setdefault(sid, {})
                if positions.get(shard, ZERO) < stream_id:
                    positions[shard] = stream_id
        return sent

    def _shed(self, sid: str, eio_sid: str) -> None:
        """A client that cannot keep up: it gets nothing more, and its connection is
        closed. Its memory stays bounded, the others are not held up, and it comes back
        with its last id and is caught up from the stream."""
        self._end_hold(sid)
        self._shedding.add(sid)
        self._courier.cut(sid, eio_sid)

    # -- holding live events while a client is caught up -----------------------------
    def hold(self, sid: str) -> None:
        with self._lock:
            self._held.setdefault(sid, [])

    def is_held(self, sid: str) -> bool:
        """Connecting or being caught up: live events wait."""
        return sid in self._held

    def wait_released(self, sid: str, timeout: float) -> bool:
        """Wait until the client is not held (False if it still is after ``timeout``)."""
        with self._released:
            return self._released.wait_for(lambda: sid not in self._held, timeout)

    def _end_hold(self, sid: str) -> list[Held] | None:
        """Under the lock: the client's held events, and it is no longer held."""
        held = self._held.pop(sid, None)
        if held is not None:
            self._released.notify_all()
        return held

    def release(
        self,
        sid: str,
        namespace: str,
        *,
        covered: dict[int, StreamId],
        start: dict[int, StreamId],
        room_replay: RoomReplay | None = None,
    ) -> int:
        """Send what was held, in stream order, skipping what the replay covered.

        Per shard: ``covered``, up to where the replay sent everything; ``start``,
        where the client's live history begins (the shard's newest id when it was
        caught up); its position never goes below that. ``room_replay``: the replay
        covered only that room (a subscription), the others' held events all go.
        Nothing is done for a client that is not held.
        """
        with self._lock:
            held = self._end_hold(sid)
            if held is None:
                # Not held (any more): it disconnected (forgotten; nothing may be kept
                # for it again) or another catch-up released it first.
                return 0
            held.sort(key=lambda h: (h[1], h[0]))
            positions = self._positions.setdefault(sid, {})
            for shard, stream_id in start.items():
                positions[shard] = max(positions.get(shard, ZERO), stream_id)
            mine = self._covered.setdefault(sid, {})
            for shard, stream_id in covered.items():
                mine[shard] = max(mine.get(shard, ZERO), stream_id)
                positions[shard] = max(positions.get(shard, ZERO), stream_id)
            sent = 0
            for shard, stream_id, event, data, room in held:
                if stream_id <= covered.get(shard, ZERO):
                    continue
                if (
                    room_replay is not None
                    and room == room_replay.room
                    and shard == room_replay.shard
                    and stream_id <= room_replay.through
                ):
                    continue
                try:
                    self._courier.send_to(sid, namespace, event, data)
                except Exception as exc:  # one held event must never block the release
                    undeliverable(stream_id, exc)
                    continue
                sent += 1
                if positions.get(shard, ZERO) < stream_id:
                    positions[shard] = stream_id
            return sent

    def positions_of(self, sid: str) -> dict[int, StreamId]:
        """Per shard, the newest id the client was sent (a copy; empty if none)."""
        with self._lock:
            return dict(self._positions.get(sid, {}))

    def forget(self, sid: str) -> None:
        with self._lock:
            self._end_hold(sid)
            self._positions.pop(sid, None)
            self._covered.pop(sid, None)
            self._shedding.discard(sid)


def undeliverable(stream_id: object, exc: Exception) -> None:
    log.warning(
        "queue.undeliverable",
        extra={"stream_id": str(stream_id)[:64], "error": f"{type(exc).__name__}: {exc}"[:200]},
    )
