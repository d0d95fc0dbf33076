"""Catch-up: replay from the per-room histories what a client missed, then let live
events flow.

A client connects with its position: ``auth: {"positions": {"<shard>": {"last_id",
"epoch"}}}`` (or ``{"last_id", "epoch"}``, the position in shard 0, as an unsharded
stream has only that). A position is the ``meta.id`` of the last event it got: events
get their positions in the order they are published, so "I have everything up to here"
holds. Its live events are held back while, in each shard, the events after its
position in the histories of the rooms it may see (broadcast, its own room, granted
rooms) are replayed in position order; then the held events newer than the replay are
sent. The work follows the client's rooms and missed events, never the stream.

The client always gets one ``streambridge:recovery`` event saying whether its history
is complete and where it now is in each shard. Anything doubtful fails closed: no
partial replay, ``recovered: false`` with a reason. A position without an epoch (the
documented ``{"last_id"}``) is accepted while its own event is still in a history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from redis.backoff import EqualJitterBackoff
from streambridge.webapp.ext.delivery_ledger import DeliveryLedger, RoomReplay
from streambridge.webapp.ext.identity import Viewer
from streambridge.webapp.ext.metrics import WebMetrics
from streambridge.webapp.ext.queue_manager import StreamQueueManager

from streambridge import defaults, history, keys, queue
from streambridge.contract import RESERVED_PREFIX, shard_for
from streambridge.ids import ZERO, StreamId
from streambridge.redis_conn import ERRORS
from streambridge.settings import WebSettings

log = logging.getLogger(__name__)

RECOVERY_EVENT = RESERVED_PREFIX + "recovery"
CONNECT_WAIT_S = 5.0
RETRY_S = 30.0  # how long catch-up retries while Redis is unavailable
RETRY_DELAY = EqualJitterBackoff(cap=1.0, base=0.05)  # between two of those tries
DRAIN_WAIT_S = 10.0
SHARD_KEY_DIGITS = len(str(defaults.MAX_SHARDS - 1))  # int() of a longer key is wasted work

Position = tuple[Any, Any]  # (last_id, epoch) as the client sent them
CURRENT = object()
"""As the epoch of a position: whatever the stream's epoch is now (no second read)."""
UNCHECKABLE = object()
"""As the epoch of a position: one that must be refused (see ``positions``)."""


Missed = tuple[StreamId, str | None, dict[str, str]]  # (position, room, history fields)


@dataclass(frozen=True)
class Plan:
    """What to do for one shard."""

    recovered: bool
    reason: str | None
    after: StreamId | None  # replay events after this position (None: no replay)
    through: StreamId  # the newest position the shard has given
    epoch: str
    missed: tuple[Missed, ...] = ()  # what to replay, in position order

    @property
    def covered(self) -> StreamId | None:
        """Everything up to here the client has once the replay is sent (recovered only)."""
        return self.through if self.recovered and self.after is not None else None


@dataclass(frozen=True)
class Plans:
    """One plan per shard; the history is complete only if it is in every shard."""

    shards: list[Plan]

    @property
    def recovered(self) -> bool:
        return all(p.recovered for p in self.shards)

    @property
    def reason(self) -> str | None:
        return next((p.reason for p in self.shards if p.reason), None)

    @property
    def replays(self) -> bool:
        # Fail closed: a gap in one shard means no replay in any.
        return self.recovered and any(p.covered for p in self.shards)

    def covered(self) -> dict[int, StreamId]:
        if not self.recovered:
            return {}
        return {i: p.covered for i, p in enumerate(self.shards) if p.covered is not None}

    def start(self) -> dict[int, StreamId]:
        return {i: p.through for i, p in enumerate(self.shards)}

    def info(self, replayed: int, at: dict[int, StreamId]) -> dict[str, Any]:
        """The recovery event: complete or not, and where the client now is (``at``:
        the newest id it has been sent in each shard)."""
        info: dict[str, Any] = {
            "recovered": self.recovered,
            "replayed": replayed,
            "epoch": self.shards[0].epoch,
            # Not where the stream could not be read (no epoch): the client keeps its own.
            "positions": {
                str(i): {"last_id": str(at.get(i, p.through)), "epoch": p.epoch}
                for i, p in enumerate(self.shards)
                if p.epoch
            },
        }
        if self.reason:
            info["reason"] = self.reason
        return info


@dataclass
class Client:
    sid: str
    namespace: str
    user: Viewer
    subscribed: set[str] = field(default_factory=set)  # rooms it asked for (``subscriptions``)
    # One catch-up of this client at a time (a re-sync, a subscription, an unsubscription).
    lock: threading.Lock = field(default_factory=threading.Lock)
    resync_pending: bool = False  # held for a re-sync: only the re-sync releases it
    requests: Any = None  # its subscription requests' rate limit (subscriptions.TokenBucket)


class CatchUp:
    """Catches clients up through the queue manager: its ``ledger`` holds, releases and
    knows positions; the manager itself sends, measures a client's queue and runs the
    green threads. ``on_gap`` is for the manager's ``gaps`` (the extension connects it)."""

    def __init__(
        self,
        client: redis.Redis,
        manager: StreamQueueManager,
        settings: WebSettings,
        metrics: WebMetrics | None = None,
    ) -> None:
        self.metrics = metrics or WebMetrics()
        self.redis = client
        self.manager = manager
        self.settings = settings
        self.shards = settings.shard_settings()
        self.clients: dict[str, Client] = {}
        self._read_script = history.Script(client, history.READ)

    @property
    def ledger(self) -> DeliveryLedger:
        return self.manager.ledger

    # -- connect / disconnect --------------------------------------------------------
    def hold(self, sid: str) -> None:
        """First thing in the connect handler, before anything that can yield: a
        pre-connected client is already in the broadcast room, and nothing may reach it
        before its CONNECT packet and its replay."""
        self.ledger.hold(sid)

    def on_connect(self, sid: str, namespace: str, user: Viewer) -> None:
        """The client is accepted; called before it joins its rooms."""
        self.clients[sid] = Client(sid, namespace, user)

    def on_disconnect(self, sid: str) -> bool:
        """Forget the client; True if it was one of ours (it had connected)."""
        known = self.clients.pop(sid, None) is not None
        self.ledger.forget(sid)
        return known

    def run(self, sid: str, auth: Any) -> None:
        """Background task after connect: plan, replay, notify, release."""
        client = self.clients.get(sid)
        if client is None or not self._wait_connected(client):
            return
        try:
            positions = self.positions(auth)
            plans, replayed = self._caught_up(client, lambda: positions, dict)
        except Exception as exc:  # a bug must not leave the client held forever
            log.exception("catchup.failed", extra={"sid": sid, "error": str(exc)})
            plans, replayed = self._unavailable(), 0
        self._finish(client, plans, replayed)

    def _caught_up(
        self,
        client: Client,
        positions: Callable[[], list[Position]],
        through: Callable[[], dict[int, StreamId]],
    ) -> tuple[Plans, int]:
        """Plan and replay from ``positions()``; while Redis is unavailable (a restart,
        a failover), retry for a while before telling the client its history is
        incomplete. Its live events stay held meanwhile."""
        deadline = time.monotonic() + RETRY_S
        failures = 0
        while True:
            try:
                plans = self.plan_all(client, positions())
                return plans, self.replay_all(client, plans)
            except ERRORS as exc:
                if time.monotonic() > deadline or client.sid not in self.clients:
                    log.warning("catchup.redis_error", extra={"sid": client.sid, "error": str(exc)})
                    return self._unavailable(through()), 0
                self.manager.sleep(RETRY_DELAY.compute(failures))
                failures += 1

    def positions(self, auth: Any) -> list[Position]:
        """The client's position in each shard (None, None where it has none)."""
        out: list[Position] = [(None, None)] * len(self.shards)
        if not isinstance(auth, dict):
            return out
        given = auth.get("positions")
        if isinstance(given, dict):
            for key, value in given.items():
                known = (
                    isinstance(key, str)
                    and 0 < len(key) <= SHARD_KEY_DIGITS  # int() of a huge key raises
                    and key.isascii()
                    and key.isdecimal()
                    and int(key) < len(out)
                )
                if known and isinstance(value, dict):
                    out[int(key)] = (value.get("last_id"), value.get("epoch"))
        elif "last_id" in auth:
            epoch = auth.get("epoch")
            if epoch is None and len(out) > 1:
                epoch = UNCHECKABLE  # the other shards' history cannot be proved continuous
            out[0] = (auth.get("last_id"), epoch)
        return out

    def plan_all(self, client: Client, positions: list[Position]) -> Plans:
        return Plans(
            [self.plan(client, last_id, epoch, i) for i, (last_id, epoch) in enumerate(positions)]
        )

    def replay_all(self, client: Client, plans: Plans) -> int:
        if not plans.replays:
            return 0
        return sum(self.replay(client, plan, i) for i, plan in enumerate(plans.shards))

    def _unavailable(self, through: dict[int, StreamId] | None = None) -> Plans:
        through = through or {}
        return Plans(
            [
                Plan(False, "stream unavailable", None, through.get(i, ZERO), "")
                for i in range(len(self.shards))
            ]
        )

    def on_gap(self) -> None:
        """The queue listener lost its subscription and has it back. Called in the
        listener before it delivers anything newer: hold every client now (no I/O), so
        no live event moves a client past the gap, then re-sync in the background."""
        clients = list(self.clients.values())
        for client in clients:
            client.resync_pending = True
            self.ledger.hold(client.sid)
        self.manager.start_background_task(self.resync, clients)

    def resync(self, clients: list[Client]) -> None:
        """Replay for each held client from the last id it got in each shard, so
        clients that never disconnected miss nothing."""
        log.info("catchup.resync", extra={"clients": len(clients)})
        for client in clients:
            with client.lock:  # after a subscription under way, before the next
                client.resync_pending = False
                try:
                    plans, replayed = self._resync_one(client)
                except Exception as exc:  # a bug must not leave the client held forever
                    log.exception("catchup.failed", extra={"sid": client.sid, "error": str(exc)})
                    plans = self._unavailable(self.ledger.positions_of(client.sid))
                    replayed = 0
                self._finish(client, plans, replayed, notify=not plans.recovered)

    def _resync_one(self, client: Client) -> tuple[Plans, int]:
        def at() -> dict[int, StreamId]:
            return self.ledger.positions_of(client.sid)

        def positions() -> list[Position]:
            # The server's own positions: in the stream's current epoch.
            now = at()
            return [(str(now.get(i, ZERO)), CURRENT) for i in range(len(self.shards))]

        return self._caught_up(client, positions, at)

    # -- a room on request -------------------------------------------------------------
    def subscribe(self, client: Client, room: str, position: Any) -> dict[str, Any]:
        """Join ``room`` and replay what the client missed there since ``position`` (the
        connect form: ``{"positions": {...}}`` or ``{"last_id", "epoch"}``; none: from
        now on). Its live events are held meanwhile, as at connect; held events of the
        room that the replay sent are dropped. The caller holds ``client.lock`` and has
        waited out the connect catch-up. Returns ``recovered``, ``replayed`` and any
        ``reason``.

        The replay stops at the newest position the client already has everything
        before: the newest this server's listener had handled when the hold began (what
        came before went out live) or the newest the client was sent. The room's later
        events come live, held with the others' and sent with them in order, so the
        client never gets a position before an earlier event of another room."""
        shard = shard_for(room, len(self.shards))
        last_id, epoch = self.positions(position)[shard]
        plan: Plan | None = None
        room_replay = None
        replayed = 0
        self.ledger.hold(client.sid)
        # No yield between the hold and this: whatever the listener handles next is held.
        bound = max(
            self.manager.newest_handled.get(shard, ZERO),
            self.ledger.positions_of(client.sid).get(shard, ZERO),
        )
        try:
            # Joined before the history is read: an event published after the read
            # arrives live (held), one published before is in the history.
            client.subscribed.add(room)
            self.manager.enter_room(client.sid, client.namespace, room)
            if last_id is not None:
                try:
                    plan = self.plan(client, last_id, epoch, shard, only=room)
                except ERRORS as exc:
                    log.warning("catchup.redis_error", extra={"sid": client.sid, "error": str(exc)})
                    plan = self._unavailable().shards[shard]
                if plan.covered is not None:
                    plan = replace(plan, missed=tuple(m for m in plan.missed if m[0] <= bound))
                    replayed = self.replay(client, plan, shard)
                    room_replay = RoomReplay(room, shard, bound)
        finally:
            if client.resync_pending:
                # A lost queue subscription meanwhile: the re-sync (which covers this
                # room too) releases the client once it has replayed what was lost.
                log.info("catchup.subscribe_left_to_resync", extra={"sid": client.sid})
            else:
                released = self.ledger.release(
                    client.sid, client.namespace, covered={}, start={}, room_replay=room_replay
                )
                self.metrics.live_deliveries.inc(released)
        self.metrics.replayed.inc(replayed)
        answer: dict[str, Any] = {"recovered": plan is None or plan.recovered, "replayed": replayed}
        if plan is not None and plan.reason:
            answer["reason"] = plan.reason
        return answer

    def unsubscribe(self, client: Client, room: str) -> None:
        client.subscribed.discard(room)
        self.manager.leave_room(client.sid, client.namespace, room)

    # -- the decision -------------------------------------------------------------
    def plan(
        self,
        client: Client,
        last_id: Any,
        client_epoch: Any,
        shard: int = 0,
        only: str | None = None,
    ) -> Plan:
        """The plan for one shard, from the client's position there (``only``: for that
        one room instead of all the client's rooms)."""
        epoch = self._epoch(shard)
        if last_id is None:
            return Plan(True, None, None, self._read(client, shard, None).last, epoch)
        try:
            after = StreamId.parse(last_id)
        except ValueError:
            return self._refuse(client, "malformed last_id", epoch, shard)
        if client_epoch is UNCHECKABLE:
            return self._refuse(
                client,
                "a last_id without an epoch cannot be checked on a sharded stream; send "
                "positions per shard",
                epoch,
                shard,
            )
        if client_epoch is not None and client_epoch is not CURRENT and client_epoch != epoch:
            return self._refuse(client, "stream was recreated (epoch changed)", epoch, shard)
        rooms = self._rooms(client, shard, only)  # once: a subscription may change them
        snapshot = self._read(client, shard, after, rooms)
        refuse = Plan(False, None, None, snapshot.last, epoch)
        if after > snapshot.last:
            return replace(refuse, reason="last_id is in the future")
        if client_epoch is None and after != ZERO and not history.proves(snapshot.rooms):
            # The documented {"last_id"} form: continuous only if the client's own last
            # event is still in one of its rooms' histories.
            return replace(
                refuse, reason="position without an epoch whose event is no longer in history"
            )
        ttl_ms = self.settings.history_ttl_s * 1000
        for room in snapshot.rooms:
            reason = history.gap(room, after, snapshot.now_ms, snapshot.since_ms, ttl_ms)
            if reason is not None:
                return replace(refuse, reason=reason)
        missed = sorted(
            (StreamId.parse(position), name, fields)
            for name, room in zip(rooms, snapshot.rooms, strict=True)
            for position, fields in room.entries
        )
        limit = self.settings.replay_limit
        if len(missed) > limit:
            return replace(refuse, reason=f"more than {limit} events missed")
        return Plan(True, None, after, snapshot.last, epoch, tuple(missed))

    def _refuse(self, client: Client, reason: str, epoch: str, shard: int) -> Plan:
        return Plan(False, reason, None, self._read(client, shard, None).last, epoch)

    def _rooms(self, client: Client, shard: int, only: str | None = None) -> list[str | None]:
        """The rooms the client may see (``only``: just that one) whose events are in
        ``shard``."""
        count = len(self.shards)
        if only is not None:
            rooms: list[str | None] = [only]
        else:
            rooms = [None, *client.user.all_rooms, *sorted(client.subscribed)]
        return [r for r in dict.fromkeys(rooms) if shard_for(r, count) == shard]

    def _read(
        self,
        client: Client,
        shard: int,
        after: StreamId | None,
        rooms: list[str | None] | None = None,
    ) -> history.Snapshot:
        """One atomic read of the shard's clock and, from ``after``, the histories of
        ``rooms`` there (at most replay_limit + 1 events each)."""
        stream = self.shards[shard].stream
        names = [keys.history_clock(stream)]
        if after is not None:
            names += [keys.history(stream, client.namespace, r) for r in rooms or []]
        reply = self._read_script(
            keys=names, args=["" if after is None else str(after), self.settings.replay_limit + 1]
        )
        return history.Snapshot.parse(reply)

    # -- the work -------------------------------------------------------------------
    def replay(self, client: Client, plan: Plan, shard: int = 0) -> int:
        """Send one shard's missed events in position order, a page at a time."""
        sent = 0
        sharded = len(self.shards) > 1
        page = self.settings.replay_page
        for position, room, fields in plan.missed:
            try:
                entry_id, channel, sender, body = history.stored_event(str(position), fields)
                meta = queue.meta(
                    str(position), entry_id, plan.epoch, shard if sharded else None, sender
                )
                meta["replayed"] = True
                self.manager.send_to(client.sid, client.namespace, channel, [body, meta])
                sent += 1
            except Exception as exc:  # one entry must never fail a whole replay
                log.warning(
                    "catchup.entry_skipped",
                    extra={
                        "sid": client.sid,
                        "position": str(position),
                        "room": room,
                        "error": f"{type(exc).__name__}: {exc}"[:200],
                    },
                )
            if sent % page == 0:
                self._wait_drained(client)
        return sent

    def _finish(self, client: Client, plan: Plans, replayed: int, notify: bool = True) -> None:
        self.metrics.replayed.inc(replayed)
        self.metrics.recoveries.labels("true" if plan.recovered else "false").inc()
        released = self.ledger.release(
            client.sid, client.namespace, covered=plan.covered(), start=plan.start()
        )
        self.metrics.live_deliveries.inc(released)  # held back during the replay
        if notify:
            info = plan.info(replayed, self.ledger.positions_of(client.sid))
            self.manager.send_to(client.sid, client.namespace, RECOVERY_EVENT, [info])
        log.info(
            "catchup.done",
            extra={
                "sid": client.sid,
                "user": client.user.name,
                "recovered": plan.recovered,
                "reason": plan.reason,
                "replayed": replayed,
                "released": released,
            },
        )

    def _wait_drained(self, client: Client) -> None:
        """Pace a long replay by what the client takes: let its queue drain below three
        quarters of the shedding limit before the next page."""
        limit = self.ledger.max_client_queue * 3 // 4
        deadline = time.monotonic() + DRAIN_WAIT_S
        while self.manager.queue_length(client.sid, client.namespace) > limit:
            if time.monotonic() > deadline or client.sid not in self.clients:
                return
            self.manager.sleep(0.002)

    def _wait_connected(self, client: Client) -> bool:
        deadline = time.monotonic() + CONNECT_WAIT_S
        while not self.manager.is_connected(client.sid, client.namespace):
            if client.sid not in self.clients or time.monotonic() > deadline:
                return False
            self.manager.sleep(0.005)
        return True

    def _epoch(self, shard: int) -> str:
        return self.redis.get(self.shards[shard].epoch_key) or ""
