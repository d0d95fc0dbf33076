"""The bridge: read the stream with a consumer group, publish each entry to the
Socket.IO queue, and XACK only what was published.

Order of work in each pass: this consumer's own pending entries first (after a
crash), then entries other consumers left idle (XAUTOCLAIM), then new entries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException
from streambridge.bridge import consumer_name
from streambridge.bridge.consumer_name import ConsumerName, DuplicateConsumer
from streambridge.bridge.link import Command, Link, Packed
from streambridge.bridge.metrics import BridgeMetrics

from streambridge import history
from streambridge.contract import ContractError, Event, shown
from streambridge.deadletter import dead_fields
from streambridge.keys import history as history_key
from streambridge.keys import idempotency as idempotency_key
from streambridge.log_context import Bound
from streambridge.queue import (
    BATCH_TAIL,
    ITEM_CLOSE,
    ITEM_OPEN,
    MAX_BATCH_BYTES,
    batch_head,
    item_place,
    item_tail,
    shard_route,
)
from streambridge.redis_conn import field_dict
from streambridge.settings import BridgeSettings

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str] | list[str] | None]
"""A stream id and its fields: a dict, or Redis's flat list of names and values as the
link reads them (made a dict when the batch is prepared, while Redis works)."""
DeadLetter = tuple[str, dict[str, str], str]  # stream id, fields, reason

CLAIM_EVERY_MIN_S = 0.5
CLAIM_EVERY_MAX_S = 30.0
TRIM_EVERY_S = 10.0


class RetryBackoff(ExponentialBackoff):
    """redis-py's capped exponential back-off, jittered to 80-100 % of it: several
    bridges do not reconnect in lock-step, yet each pause still grows (equal jitter,
    50-100 %, could make a pause shorter than the one before)."""

    def compute(self, failures: int) -> float:
        return super().compute(failures) * random.uniform(0.8, 1.0)  # noqa: S311


def retry_backoff(settings: BridgeSettings) -> RetryBackoff:
    """The pause after the n-th failure in a row: 80-100 % of
    min(backoff_max_s, backoff_min_s * 2**n)."""
    return RetryBackoff(
        cap=max(settings.backoff_max_s, settings.backoff_min_s), base=settings.backoff_min_s
    )


class PublishFailed(Exception):
    """A queue message could not be published: the rest of its batch waits for it."""


class NotReady(Exception):
    """The stream key exists but cannot be used (e.g. WRONGTYPE)."""


@dataclass
class Plan:
    """One batch sorted: what to publish, what is gone, what to dead-letter."""

    valid: list[tuple[str, Event]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass
class Batch:
    """A batch ready to send: the events to publish (the publish script acks each one)
    and the ids only to ack (gone, or their dead letter written)."""

    valid: list[tuple[str, Event]]
    ack: list[str]
    started: float  # when it was read: the batch-duration metric
    publish: list[Packed]  # built while Redis works


class Bridge:
    def __init__(
        self,
        settings: BridgeSettings,
        client: redis.Redis | None = None,
        metrics: BridgeMetrics | None = None,
        shard: int = 0,
    ) -> None:
        """One bridge loop for one stream: shard ``shard`` of ``settings.shards``."""
        # Meta names the shard only when there are several (ids are per shard).
        self.shard = shard if settings.shards > 1 else None
        self.settings = settings = settings.for_shard(shard)
        self.redis = client if client is not None else connect(settings)
        self.route = shard_route(settings)
        self._append = history.Script(self.redis, history.APPEND)
        self._link = Link(self.redis)
        self.stopping = threading.Event()
        self.refused: DuplicateConsumer | None = None
        self.epoch = ""
        self.stats = {
            "read": 0, "emitted": 0, "acked": 0, "dead": 0, "claimed": 0, "trimmed": 0,
            "repeats": 0,
        }  # fmt: skip
        self.metrics = metrics or BridgeMetrics()
        claim_every = settings.claim_idle_ms / 2000
        self._claim_every = min(CLAIM_EVERY_MAX_S, max(CLAIM_EVERY_MIN_S, claim_every))
        self._next_claim = 0.0
        self._next_trim = 0.0
        self._prefetched: list[Entry] = []  # read, not yet prepared
        # Sent, replies not read yet: each batch (None: only a read) and whether it reads.
        self._in_flight: deque[tuple[Batch | None, bool]] = deque()
        self._next_alive = 0.0
        self._backoff = retry_backoff(settings)
        self._failures = 0  # in a row: how long the next pause is
        self.on_ready: Callable[[], Any] | None = None
        self.log = Bound(log, {"consumer": settings.consumer, "stream": settings.stream})
        # Held while running: a restart finds its own pending entries; no live twin.
        self.name = ConsumerName(self.redis, settings.alive_key, settings.consumer, self.log)

    # -- lifecycle -------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current batch and return."""
        self.stopping.set()

    def run(self) -> None:
        self._failures = 0
        self.log.info("bridge.starting", extra={"group": self.settings.group})
        while not self.stopping.is_set():
            # After an error, entries read but not processed are still in our pending
            # list: drain_own_pending replays them, so forget the copies held here.
            self._prefetched = []
            self._in_flight.clear()
            self._link.close()  # replies of a round trip in flight are not wanted
            try:
                self.name.claim(self.stopping)
                self.ensure_group()
                self.drain_own_pending()
                self.log.info("bridge.ready", extra={"epoch": self.epoch})
                if self.on_ready is not None:
                    self.on_ready()
                self._failures = 0
                while not self.stopping.is_set():
                    self.step()
                    self._failures = 0
                self._finish_held()
            except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as exc:
                self._pause("bridge.redis_unavailable", error=str(exc))
            except NotReady as exc:
                self._pause("bridge.stream_not_ready", error=str(exc))
            except DuplicateConsumer as exc:
                self.log.error("bridge.duplicate_consumer", extra={"error": str(exc)})
                self.refused = exc
                self.stopping.set()
            except PublishFailed as exc:
                self._pause("bridge.publish_failed", error=str(exc))
            except redis.ResponseError as exc:
                if str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    # Stream or group deleted under us: recreate and carry on.
                    self.log.warning("bridge.group_missing", extra={"error": str(exc)})
                    self.stopping.wait(self.settings.backoff_min_s)
                elif str(exc).startswith("WRONGTYPE"):
                    self._pause("bridge.stream_not_ready", error=str(exc))
                else:
                    self._pause("bridge.redis_error", error=str(exc))
            except Exception as exc:  # a bug must not kill the daemon; back off and retry
                self.log.exception("bridge.unexpected_error", extra={"error": str(exc)})
                self.stopping.wait(self._next_delay())
        self._link.close()
        self.name.release()
        self.log.info("bridge.stopped", extra=dict(self.stats))

    def _next_delay(self) -> float:
        delay = self._backoff.compute(self._failures)
        self._failures += 1
        return delay

    def _pause(self, event: str, **fields: Any) -> None:
        self.metrics.redis_errors.labels(event.removeprefix("bridge.")).inc()
        delay = self._next_delay()
        self.log.warning(event, extra={"retry_in_s": round(delay, 2), **fields})
        self.stopping.wait(delay)

    # -- set-up ----------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the group (and stream) if missing; refuse a key that is not a stream."""
        kind = self.redis.type(self.settings.stream)
        if kind not in ("stream", "none"):
            raise NotReady(f"key {self.settings.stream!r} holds a {kind}, not a stream")
        try:
            self.redis.xgroup_create(
                self.settings.stream, self.settings.group, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
            created = False
        else:
            created = True
        epoch_key = self.settings.epoch_key
        if created:
            # A new group means a new (or reset) history: old client positions are void.
            self.redis.set(epoch_key, uuid.uuid4().hex)
            self.log.info("bridge.group_created", extra={"group": self.settings.group})
        else:
            self.redis.set(epoch_key, uuid.uuid4().hex, nx=True)
        self.epoch = self.redis.get(epoch_key) or ""

    # -- the work --------------------------------------------------------------
    def drain_own_pending(self) -> None:
        """Replay entries this consumer read but never acked (e.g. before a crash)."""
        cursor = "0-0"
        while not self.stopping.is_set():
            entries = self._read(cursor, block=False)
            if not entries:
                return
            self.log.info("bridge.replaying_own_pending", extra={"count": len(entries)})
            self.process(entries, redelivered=True)
            cursor = entries[-1][0]
            self._heartbeat()

    def step(self) -> None:
        now = time.monotonic()
        if now >= self._next_claim:
            self.claim_idle()
            self._next_claim = time.monotonic() + self._claim_every
        if now >= self._next_trim:
            self.trim()
            self.refresh_gauges()
            self._next_trim = time.monotonic() + TRIM_EVERY_S
        self._heartbeat()
        if not (self._prefetched or self._in_flight):
            self._prefetched = self._read(">", block=True)
            if not self._prefetched:
                if not self.redis.exists(self.settings.stream):
                    # Before Redis 7, XREADGROUP on a deleted stream just times out.
                    raise redis.ResponseError("NOGROUP stream was deleted")
                return
        read_next = not self.stopping.is_set()
        if self._prefetched:
            # In a backlog, two round trips are in flight: Redis works on one while the
            # bridge prepares the batch the one before read. At the start of a backlog a
            # round trip that only reads gets the reading one batch ahead.
            full = len(self._prefetched) >= self.settings.batch_size
            if full and read_next and not self._in_flight:
                self._round_trip(None, read_next=True)
            batch = self._prepare(self._prefetched, guard=self._guard())
            self._prefetched = []
            self._round_trip(batch, read_next)
        self._prefetched = self._finish(*self._in_flight.popleft())

    def _guard(self) -> str:
        """The last event of the newest batch in flight: a batch sent after it publishes
        nothing while that event is still pending here (its batch stopped part-way), so
        a later event never overtakes an earlier one. '' when none is in flight."""
        for batch, _ in reversed(self._in_flight):
            if batch is not None and batch.valid:
                return batch.valid[-1][0]
        return ""

    def _round_trip(self, batch: Batch | None, read_next: bool) -> None:
        """Send ``batch`` (and a non-blocking read of new entries), replies read later."""
        self._send(batch, read_next)
        self._in_flight.append((batch, read_next))

    def _collect_all(self) -> None:
        """Read every round trip in flight; what they read is held to be prepared."""
        while self._in_flight:
            self._prefetched += self._finish(*self._in_flight.popleft())

    def _finish_held(self) -> None:
        """On a stop: publish and ack what was read before it, in order."""
        self._collect_all()
        if self._prefetched:
            entries, self._prefetched = self._prefetched, []
            self.process(entries)

    def _heartbeat(self) -> None:
        """Refresh the liveness key that holds our name, every second, also in long
        drains and claims: `streambridge bridge --check` reads it, and a second bridge
        with the same name is refused by it."""
        now = time.monotonic()
        if now >= self._next_alive:
            self.name.keep()
            self._next_alive = now + consumer_name.EVERY_S

    def _read(self, cursor: str, block: bool) -> list[Entry]:
        """One XREADGROUP from ``cursor`` ('>': new entries, else this consumer's own
        pending ones after it), on its own round trip."""
        self._link.send([self._read_command(block, cursor)])
        [reply] = self._link.replies()
        if isinstance(reply, Exception):
            raise reply
        return _entries(reply)

    def _read_command(self, block: bool, cursor: str = ">") -> Command:
        s = self.settings
        wait = ("BLOCK", s.block_ms) if block else ()
        return (
            "XREADGROUP",
            "GROUP",
            s.group,
            s.consumer,
            "COUNT",
            s.batch_size,
            *wait,
            "STREAMS",
            s.stream,
            cursor,
        )

    def claim_idle(self) -> None:
        """Take over entries idle longer than claim_idle_ms (a dead consumer's, or our own
        failed publishes)."""
        cursor = "0-0"
        while not self.stopping.is_set():
            reply = self.redis.xautoclaim(
                self.settings.stream,
                self.settings.group,
                self.settings.consumer,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=cursor,
                count=self.settings.batch_size,
            )
            cursor = reply[0]
            entries = [(i, f) for i, f in reply[1]] if len(reply) > 1 else []
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                # Redis 7 drops trimmed ids from the PEL itself; just count them.
                self._count("trimmed", len(deleted))
                self.log.warning("bridge.pending_trimmed", extra={"count": len(deleted)})
            if entries:
                self._count("claimed", len(entries))
                self.log.info(
                    "bridge.claimed", extra={"count": len(entries), "first_id": entries[0][0]}
                )
                self.process(entries, redelivered=True)
            self._heartbeat()
            if cursor in ("0-0", b"0-0"):
                return

    def trim(self) -> None:
        """Keep about ``maxlen`` entries, as publish() does, so producers that XADD
        without MAXLEN (redis-cli, cron) cannot grow the stream without bound."""
        length = self.redis.xlen(self.settings.stream)
        if length <= self.settings.maxlen:
            return
        # Approximate trimming only removes whole nodes, so each call is bounded work.
        removed = self.redis.xtrim(
            self.settings.stream,
            maxlen=self.settings.maxlen,
            approximate=True,
            limit=self.settings.batch_size * 20,
        )
        if removed:
            self.log.debug("bridge.trimmed", extra={"removed": removed, "length": length})

    def refresh_gauges(self) -> None:
        for group in self.redis.xinfo_groups(self.settings.stream):
            if group["name"] == self.settings.group:
                stream = self.settings.stream
                if group.get("lag") is not None:
                    self.metrics.group_lag.labels(stream).set(group["lag"])
                self.metrics.group_pending.labels(stream).set(group["pending"])

    def process(self, entries: Sequence[Entry], *, redelivered: bool = False) -> None:
        """Publish every valid entry, dead-letter the rest, and ack each one done.

        Valid entries are published by the history script, which acks each in the same
        atomic step (an ack means "published"; an entry another bridge has published
        meanwhile is not published again). A dead letter is acked once its copy is
        written.
        """
        self._collect_all()  # the link's replies in order: none in flight but these
        batch = self._prepare(entries, redelivered)
        self._send(batch, read_next=False)
        self._finish(batch, read_next=False)

    def _prepare(
        self, entries: Sequence[Entry], redelivered: bool = False, guard: str = ""
    ) -> Batch:
        """Validate a batch and write its dead letters: what is left is to send it.
        ``guard``: see ``_guard``."""
        started = time.perf_counter()
        self._count("read", len(entries))
        plan = self._plan(entries, redelivered)
        ack = plan.gone + self._write_dead_letters(plan.dead)
        self._report_gone(plan.gone)
        commands = self._publish_commands(plan.valid, guard) if plan.valid else []
        publish = [self._link.pack(command) for command in commands]
        return Batch(plan.valid, ack, started, publish)

    def _plan(self, entries: Sequence[Entry], redelivered: bool) -> Plan:
        """Sort a batch into events to publish, entries gone from the stream and dead
        letters with their reasons; writes nothing."""
        s = self.settings
        over_limit = self._over_delivered(entries) if redelivered else {}
        plan = Plan()
        for stream_id, flat in entries:
            fields = field_dict(flat)
            if not fields:
                # Trimmed or deleted while pending (XADD needs a field, so empty means gone).
                plan.gone.append(stream_id)
                continue
            if stream_id in over_limit:
                reason = f"delivered {over_limit[stream_id]} times (limit {s.max_deliveries})"
            else:
                try:
                    event = Event.from_entry(fields, max_body_bytes=s.max_body_bytes)
                    plan.valid.append((stream_id, event))
                    continue
                except ContractError as exc:
                    reason = exc.reason
                except Exception as exc:  # one odd entry must not stall the batch
                    reason = shown(f"cannot be validated: {type(exc).__name__}: {exc}", 500)
            plan.dead.append((stream_id, fields, reason))
            self.log.warning("bridge.dead_letter", extra={"stream_id": stream_id, "reason": reason})
        return plan

    def _write_dead_letters(self, dead: list[DeadLetter]) -> list[str]:
        """Copy the dead letters to the dead stream in one round trip; returns only the ids
        whose copy is written, so nothing is acked before it is kept."""
        if not dead:
            return []
        s = self.settings
        pipe = self.redis.pipeline(transaction=False)
        for stream_id, fields, reason in dead:
            pipe.xadd(
                s.dead_stream,
                dead_fields(fields, stream_id, reason, s.consumer),
                maxlen=s.dead_maxlen,
                approximate=True,
            )
        ids = [stream_id for stream_id, _, _ in dead]
        return self._dead_lettered(ids, pipe.execute(raise_on_error=False))

    def _report_gone(self, gone: list[str]) -> None:
        """Count and report entries trimmed or deleted while pending: there is nothing to
        publish, they are only acked."""
        if gone:
            self._count("trimmed", len(gone))
            self.log.warning(
                "bridge.pending_trimmed", extra={"count": len(gone), "first_id": gone[0]}
            )

    def _send(self, batch: Batch | None, read_next: bool) -> None:
        """One round trip, sent: the publish script (by SHA), the XACK of ``batch.ack``
        and, with ``read_next``, a read of new entries that does not wait. ``_finish``
        reads the replies."""
        s = self.settings
        commands: list[Command | Packed] = []
        if batch is not None:
            commands += batch.publish
            if batch.ack:
                commands.append(("XACK", s.stream, s.group, *batch.ack))
        if read_next:
            commands.append(self._read_command(block=False))
        if commands:
            self._link.send(commands)

    def _finish(self, batch: Batch | None, read_next: bool) -> list[Entry]:
        """Read the replies of ``_send``; raise on the first failure, so nothing is
        counted as acked that is not. Returns the next batch read."""
        valid, ack = (batch.valid, batch.ack) if batch is not None else ([], [])
        if not (valid or ack or read_next):
            return []
        replies = self._link.replies()
        queued = len(batch.publish) if batch is not None else 0
        if valid:
            self._published(valid, replies[:queued])
        self._acked(ack, replies[queued:])
        if batch is not None:
            self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        return _entries(replies[-1]) if read_next else []

    def _acked(self, ack: list[str], replies: list[Any]) -> None:
        """Raise the first error of the XACK or the read; count ``ack`` only when none."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self._count("acked", len(ack))

    def _dead_lettered(self, ids: list[str], results: list[Any]) -> list[str]:
        """The ids whose dead letter was written (to be acked); the rest stay pending and
        are dead-lettered again when claimed."""
        done = []
        for stream_id, result in zip(ids, results, strict=True):
            if isinstance(result, Exception):
                self.log.error(
                    "bridge.dead_letter_failed",
                    extra={"stream_id": stream_id, "error": str(result)},
                )
                if isinstance(result, (redis.ConnectionError, redis.TimeoutError)):
                    raise result
                continue
            self._count("dead")
            done.append(stream_id)
        return done

    def _publish_commands(self, valid: list[tuple[str, Event]], guard: str = "") -> list[Command]:
        """The script that publishes, keeps in each room's history and acks."""
        s = self.settings
        keys = [s.stream, s.history_clock_key]
        # Entries come in stream order (read or claimed so), so the batch's range is
        # from its first to its last.
        args: list[str | int] = [
            s.group,
            s.consumer,
            self.route.channel,
            self.route.command,
            s.history_size,
            s.history_ttl_s * 1000,
            valid[0][0],
            valid[-1][0],
            batch_head(self.epoch, self.shard),
            BATCH_TAIL,
            MAX_BATCH_BYTES,
            ITEM_OPEN,
            ITEM_CLOSE,
            guard,
            s.idempotency_window_s * 1000,
        ]
        for stream_id, event in valid:
            keys.append(history_key(s.stream, event.namespace, event.room))
            idem = event.idempotency_key
            if idem is not None:
                idem = idempotency_key(s.stream, event.namespace, event.room, event.sender, idem)
            args += (stream_id, item_tail(event, stream_id), item_place(event), idem or "")
        return [self._append.command(keys, args)]

    def _published(self, valid: list[tuple[str, Event]], replies: list[Any]) -> None:
        """Count what the script did; raise if it stopped before the end of the batch."""
        [reply] = replies
        if isinstance(reply, (redis.ConnectionError, redis.TimeoutError)):
            raise reply
        if self._append.unloaded(reply):
            raise PublishFailed("the publish script was not loaded in Redis; loading it again")
        if isinstance(reply, Exception):  # before anything was published: all stay pending
            self.log.error(
                "bridge.publish_failed", extra={"first_id": valid[0][0], "error": str(reply)}
            )
            raise PublishFailed(f"{type(reply).__name__}: {reply}") from reply
        handled, published, failure, repeats = reply
        self._count("emitted", published)
        self._count("acked", published + repeats)
        if repeats:
            self._count("repeats", repeats)
            self.log.info("bridge.repeats_acked", extra={"count": repeats})
        if failure:
            # Entries before the failing one are published and acked; it and the rest
            # stay pending and go out again, in order.
            stuck = valid[handled][0]
            self.log.error("bridge.publish_failed", extra={"first_id": stuck, "error": failure})
            raise PublishFailed(failure)
        if published + repeats < handled:
            # Claimed or acked meanwhile by another bridge (which publishes them): not twice.
            count = handled - published - repeats
            self.log.info("bridge.already_published", extra={"count": count})

    def _count(self, outcome: str, n: int = 1) -> None:
        self.stats[outcome] += n
        self.metrics.outcomes[outcome].inc(n)

    def _over_delivered(self, entries: Sequence[Entry]) -> dict[str, int]:
        """Delivery counts above the limit, for entries read from the pending list."""
        ids = [i for i, _ in entries]
        # These entries are now ours (read from our PEL or just claimed by us).
        pending = self.redis.xpending_range(
            self.settings.stream,
            self.settings.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids),
            consumername=self.settings.consumer,
        )
        wanted = set(ids)
        return {
            p["message_id"]: p["times_delivered"]
            for p in pending
            if p["message_id"] in wanted and p["times_delivered"] > self.settings.max_deliveries
        }


def connect(settings: BridgeSettings) -> Any:
    # surrogateescape: an entry that is not UTF-8 still reads (and is dead-lettered
    # byte for byte) instead of failing the whole XREADGROUP again and again.
    return settings.connect(encoding_errors="surrogateescape")


class ShardedBridge:
    """One bridge loop per shard stream, each in its own thread, one Redis client."""

    def __init__(
        self,
        settings: BridgeSettings,
        client: Any = None,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        client = client if client is not None else connect(settings)
        metrics = metrics or BridgeMetrics()
        self.bridges = [Bridge(settings, client, metrics, i) for i in range(settings.shards)]
        self.on_ready: Callable[[], Any] | None = None
        self._ready: set[int] = set()
        self._lock = threading.Lock()

    def stop(self) -> None:
        for bridge in self.bridges:
            bridge.stop()

    @property
    def refused(self) -> DuplicateConsumer | None:
        return next((b.refused for b in self.bridges if b.refused is not None), None)

    def run(self) -> None:
        for index, bridge in enumerate(self.bridges):
            bridge.on_ready = lambda index=index: self._one_ready(index)
        if len(self.bridges) == 1:
            self.bridges[0].run()
            return
        threads = [
            threading.Thread(target=b.run, name=f"bridge-{b.settings.stream}", daemon=True)
            for b in self.bridges
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # short waits: the main thread must see signals
                if self.refused is not None:
                    self.stop()  # one shard's name is taken: the whole bridge stops

    def _one_ready(self, index: int) -> None:
        with self._lock:
            first_time = len(self._ready) < len(self.bridges)
            self._ready.add(index)
            if first_time and len(self._ready) == len(self.bridges):
                log.info("bridge.all_ready", extra={"shards": len(self.bridges)})
                if self.on_ready is not None:
                    self.on_ready()


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP reply (list form of RESP2) as [(id, fields)]."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        reply = list(reply.items())
    return [(i, f) for i, f in reply[0][1]]
