"""Catch-up: replay from the stream what a client missed, then let live events flow.

A client connects with its position: ``auth: {"positions": {"<shard>": {"last_id",
"epoch"}}}`` (or ``{"last_id", "epoch"}``, the position in shard 0, as an unsharded
stream has only that). Its live events are held back while the entries after each
position that its user may see are replayed, shard by shard in stream order (a room
lives in one shard, so room order holds); then the held events newer than the replay
are sent. The client always gets one ``streambridge:recovery`` event saying whether
its history is complete and where it now is in each shard. Anything doubtful fails
closed: no partial replay, ``recovered: false``. A position without an epoch (the
documented ``{"last_id"}``) is accepted while its own entry is still in the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from streambridge import defaults, queue
from streambridge.contract import RESERVED_PREFIX, ContractError, Event
from streambridge.ids import ZERO, StreamId
from streambridge.redis_conn import ERRORS
from streambridge.settings import WebSettings
from webapp.identity import Viewer
from webapp.metrics import WebMetrics
from webapp.queue_manager import StreamQueueManager

log = structlog.get_logger(__name__)

RECOVERY_EVENT = RESERVED_PREFIX + "recovery"
CONNECT_WAIT_S = 5.0
RESYNC_RETRY_S = 30.0
DRAIN_WAIT_S = 10.0
SHARD_KEY_DIGITS = len(str(defaults.MAX_SHARDS - 1))  # int() of a longer key is wasted work

Position = tuple[Any, Any]  # (last_id, epoch) as the client sent them
CURRENT = object()
"""As the epoch of a position: whatever the stream's epoch is now (no second read)."""
UNCHECKABLE = object()
"""As the epoch of a position: one that must be refused (see ``positions``)."""


@dataclass(frozen=True)
class Plan:
    """What to do for one shard."""

    recovered: bool
    reason: str | None
    after: StreamId | None  # replay entries after this id (None: no replay)
    through: StreamId  # the newest entry that exists now
    epoch: str

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


class CatchUp:
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
        manager.on_gap = self.on_gap

    # -- connect / disconnect --------------------------------------------------------
    def hold(self, sid: str) -> None:
        """First thing in the connect handler, before anything that can yield: a
        pre-connected client is already in the broadcast room, and nothing may reach it
        before its CONNECT packet and its replay."""
        self.manager.hold(sid)

    def on_connect(self, sid: str, namespace: str, user: Viewer) -> None:
        """The client is accepted; called before it joins its rooms."""
        self.clients[sid] = Client(sid, namespace, user)

    def on_disconnect(self, sid: str) -> bool:
        """Forget the client; True if it was one of ours (it had connected)."""
        known = self.clients.pop(sid, None) is not None
        self.manager.forget(sid)
        return known

    def run(self, sid: str, auth: Any) -> None:
        """Background task after connect: plan, replay, notify, release."""
        client = self.clients.get(sid)
        if client is None or not self._wait_connected(client):
            return
        try:
            plans = self.plan_all(self.positions(auth))
            replayed = self.replay_all(client, plans)
        except ERRORS as exc:
            log.warning("catchup.redis_error", sid=sid, error=str(exc))
            plans, replayed = self._unavailable(), 0
        except Exception as exc:  # a bug must not leave the client held forever
            log.exception("catchup.failed", sid=sid, error=str(exc))
            plans, replayed = self._unavailable(), 0
        self._finish(client, plans, replayed)

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

    def plan_all(self, positions: list[Position]) -> Plans:
        return Plans([self.plan(last_id, epoch, i) for i, (last_id, epoch) in enumerate(positions)])

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
            self.manager.hold(client.sid)
        self.manager.server.start_background_task(self.resync, clients)

    def resync(self, clients: list[Client]) -> None:
        """Replay for each held client from the last id it got in each shard, so
        clients that never disconnected miss nothing."""
        log.info("catchup.resync", clients=len(clients))
        for client in clients:
            try:
                plans, replayed = self._resync_one(client)
            except Exception as exc:  # a bug must not leave the client held forever
                log.exception("catchup.failed", sid=client.sid, error=str(exc))
                plans = self._unavailable(self.manager.positions.get(client.sid))
                replayed = 0
            self._finish(client, plans, replayed, notify=not plans.recovered)

    def _resync_one(self, client: Client) -> tuple[Plans, int]:
        # Redis has just come back (or is coming back): retry for a while before
        # telling the client its history is incomplete.
        deadline = time.monotonic() + RESYNC_RETRY_S
        delay = 0.05
        while True:
            at = dict(self.manager.positions.get(client.sid, {}))
            try:
                # The server's own positions: in the stream's current epoch.
                positions = [(str(at.get(i, ZERO)), CURRENT) for i in range(len(self.shards))]
                plans = self.plan_all(positions)
                return plans, self.replay_all(client, plans)
            except ERRORS as exc:
                if time.monotonic() > deadline or client.sid not in self.clients:
                    log.warning("catchup.redis_error", sid=client.sid, error=str(exc))
                    return self._unavailable(at), 0
                self.manager.server.sleep(delay)
                delay = min(1.0, delay * 2)

    # -- the decision -------------------------------------------------------------
    def plan(self, last_id: Any, client_epoch: Any, shard: int = 0) -> Plan:
        """The plan for one shard, from the client's position there."""
        epoch = self._epoch(shard)
        if last_id is None:
            return self._fresh(epoch, shard)
        try:
            after = StreamId.parse(last_id)
        except ValueError:
            return self._refuse("malformed last_id", epoch, shard)
        if client_epoch is UNCHECKABLE:
            return self._refuse(
                "a last_id without an epoch cannot be checked on a sharded stream; send "
                "positions per shard",
                epoch,
                shard,
            )
        if client_epoch is None:
            # A position without an epoch (the documented {"last_id"} form): the history
            # is continuous if the client's own entry is still in this stream.
            if after != ZERO and not self._has_entry(after, shard):
                return self._refuse(
                    "position without an epoch whose entry is no longer in the stream",
                    epoch,
                    shard,
                )
        elif client_epoch is not CURRENT and (
            not isinstance(client_epoch, str) or client_epoch != epoch
        ):
            return self._refuse("stream was recreated (epoch changed)", epoch, shard)
        info = self._stream_info(shard)
        if info is None:
            return self._refuse("stream does not exist", epoch, shard, ZERO)
        last = StreamId.parse(info["last-generated-id"])
        if after > last:
            return self._refuse("last_id is in the future", epoch, shard, last)
        if after == last:
            return Plan(True, None, after, last, epoch)  # nothing to replay
        # Trimming removes the oldest entries: if last_id's own entry is still there,
        # nothing after it was trimmed. XDEL in the middle shows in max-deleted-entry-id.
        first = info.get("first-entry")
        added = info.get("entries-added")  # Redis >= 7.0
        if after == ZERO and added is not None:
            # From the very beginning: complete unless something was ever removed.
            lost = added > info["length"]
        else:
            lost = not first or StreamId.parse(first[0]) > after
        max_deleted = info.get("max-deleted-entry-id")  # Redis >= 7.0
        if max_deleted is not None and StreamId.parse(max_deleted) > after:
            lost = True
        if lost:
            return self._refuse("history after last_id was trimmed", epoch, shard, last)
        limit = self.settings.replay_limit
        if self._count_after(after, limit + 1, shard) > limit:
            return self._refuse(f"more than {limit} entries missed", epoch, shard, last)
        return Plan(True, None, after, last, epoch)

    def _fresh(self, epoch: str, shard: int) -> Plan:
        return Plan(True, None, None, self._last_id(shard), epoch)

    def _refuse(self, reason: str, epoch: str, shard: int, through: StreamId | None = None) -> Plan:
        through = self._last_id(shard) if through is None else through
        return Plan(False, reason, None, through, epoch)

    def _last_id(self, shard: int) -> StreamId:
        """The newest id the shard's stream has made (ZERO if there is no stream)."""
        info = self._stream_info(shard)
        return StreamId.parse(info["last-generated-id"]) if info else ZERO

    # -- the work -------------------------------------------------------------------
    def replay(self, client: Client, plan: Plan, shard: int = 0) -> int:
        """Send one shard's visible entries in (plan.after, plan.through], a page at a
        time."""
        sent = 0
        if plan.after is None or plan.after >= plan.through:
            return sent
        stream = self.shards[shard].stream
        sharded = len(self.shards) > 1
        cursor = f"({plan.after}"
        end = str(plan.through)
        while True:
            page = self.redis.xrange(stream, cursor, end, count=self.settings.replay_page)
            for stream_id, fields in page:
                try:
                    event = self._visible(client, fields)
                    if event is None:
                        continue
                    meta = queue.meta(stream_id, plan.epoch, shard if sharded else None, event)
                    meta["replayed"] = True
                    self.manager.send_to(
                        client.sid, client.namespace, event.channel, [event.decoded_body(), meta]
                    )
                    sent += 1
                except ERRORS:
                    raise
                except Exception as exc:  # one entry must never fail a whole replay
                    log.warning(
                        "catchup.entry_skipped",
                        sid=client.sid,
                        stream_id=stream_id,
                        error=f"{type(exc).__name__}: {exc}"[:200],
                    )
            if len(page) < self.settings.replay_page:
                return sent
            cursor = f"({page[-1][0]}"
            self._wait_drained(client)

    def _finish(self, client: Client, plan: Plans, replayed: int, notify: bool = True) -> None:
        self.metrics.replayed.inc(replayed)
        self.metrics.recoveries.labels("true" if plan.recovered else "false").inc()
        released = self.manager.release(
            client.sid, client.namespace, covered=plan.covered(), start=plan.start()
        )
        if notify:
            info = plan.info(replayed, self.manager.positions.get(client.sid, {}))
            self.manager.send_to(client.sid, client.namespace, RECOVERY_EVENT, [info])
        log.info(
            "catchup.done",
            sid=client.sid,
            user=client.user.name,
            recovered=plan.recovered,
            reason=plan.reason,
            replayed=replayed,
            released=released,
        )

    def _visible(self, client: Client, fields: dict[str, str]) -> Event | None:
        """The entry as an event if this client may see it (the bridge dead-letters
        entries that break the contract; they are never replayed either)."""
        try:
            event = Event.from_entry(fields, max_body_bytes=self.settings.max_body_bytes)
        except ContractError:
            return None
        if event.namespace != client.namespace or not client.user.may_receive(event.room):
            return None
        return event

    def _wait_drained(self, client: Client) -> None:
        """Pace a long replay by what the client takes: let its queue drain below three
        quarters of the shedding limit before the next page."""
        limit = self.manager.max_client_queue * 3 // 4
        deadline = time.monotonic() + DRAIN_WAIT_S
        while self.manager.queue_length(client.sid, client.namespace) > limit:
            if time.monotonic() > deadline or client.sid not in self.clients:
                return
            self.manager.server.sleep(0.002)

    def _wait_connected(self, client: Client) -> bool:
        deadline = time.monotonic() + CONNECT_WAIT_S
        while not self.manager.is_connected(client.sid, client.namespace):
            if client.sid not in self.clients or time.monotonic() > deadline:
                return False
            self.manager.server.sleep(0.005)
        return True

    def _epoch(self, shard: int) -> str:
        return self.redis.get(self.shards[shard].epoch_key) or ""

    def _stream_info(self, shard: int) -> dict | None:
        try:
            return self.redis.xinfo_stream(self.shards[shard].stream)
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise

    def _has_entry(self, stream_id: StreamId, shard: int) -> bool:
        entry = str(stream_id)
        return bool(self.redis.xrange(self.shards[shard].stream, entry, entry, count=1))

    def _count_after(self, after: StreamId, limit: int, shard: int) -> int:
        """How many entries follow ``after`` in one shard (stops counting at ``limit``)."""
        count = 0
        cursor = f"({after}"
        while count < limit:
            page = self.redis.xrange(
                self.shards[shard].stream,
                cursor,
                "+",
                count=min(self.settings.replay_page, limit),
            )
            count += len(page)
            if len(page) < min(self.settings.replay_page, limit):
                break
            cursor = f"({page[-1][0]}"
        return count
