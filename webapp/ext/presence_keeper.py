"""One web server's side of presence: its connections in rooms, kept in the registry
(``streambridge.presence``), and its clients told who joins and leaves.

A connection is present in the rooms it was granted at connect and the rooms it
subscribed to on request (not in its own ``user:`` room, nor in the broadcast). The
socket handlers only note what changed, with no I/O; one green thread writes the changes
to Redis in a pipeline, in the order they were noted, and refreshes this server's
connections every ``ttl / 3`` (so a dead server's connections go at most ``ttl`` after
its last heartbeat, and another server notices within ``ttl / 3`` more). What Redis
does not take (an outage) is kept and written once it is back; the heartbeat repairs
the rest.

The changes a script reports are published once, on the queue channel, to every web
server (``PRESENCE_METHOD``); each sends them to its clients that asked to watch that
room (``watch``), numbered, so a client ignores what came before the room it read.
Whatever may have gone unannounced (a round trip whose outcome is unknown, a publish
that failed) is followed, once Redis answers again, by a ``stale`` notice for those
rooms: their watchers read them again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import NoScriptError
from streambridge.webapp.ext.metrics import WebMetrics

from streambridge.contract import RESERVED_PREFIX
from streambridge.presence import JOINED, LEFT, Change, Presence, Snapshot, changes, snapshot
from streambridge.redis_conn import ERRORS

log = logging.getLogger(__name__)

PRESENCE_EVENT = RESERVED_PREFIX + "presence"
"""To a watching client: ``{"room", "type": "join"|"leave", "user", "seq"}``, or
``{"room", "type": "stale"}``: changes may have been missed, read the room again."""
STALE = "stale"
PRESENCE_METHOD = "streambridge.presence"
"""Queue message: ``{"method", "changes": [[namespace, room, kind, user, seq], ...],
"stale": [[namespace, room], ...]}``."""
HEARTBEAT_CHUNK = 500  # connections per heartbeat script: Redis stays responsive
PIPELINE_CHUNK = 1_000  # scripts per round trip
READ_TIMEOUT_S = 5.0
RETRY_DELAY = EqualJitterBackoff(cap=5.0, base=0.1)

Room = tuple[str, str]  # (namespace, room)


class PresenceUnavailable(RuntimeError):
    """Redis did not answer a presence read in time."""


class _ScriptLost(redis.RedisError):
    """Redis lost the script (restart, failover, flush): the next round loads it."""


@dataclass
class _Read:
    room: Room
    done: threading.Event = field(default_factory=threading.Event)
    result: Snapshot | None = None
    error: str | None = None
    again: bool = False  # Redis had lost the script: asked again in the next round


class PresenceKeeper:
    def __init__(
        self,
        registry: Presence,
        publish: Callable[[dict], Any],
        send: Callable[[str, str, str, list[Any]], None],
        start: Callable[..., Any],
        ttl_s: float,
        metrics: WebMetrics | None = None,
    ) -> None:
        """``publish``: a message to every web server's queue listener (None back: it
        failed); ``send(sid, namespace, event, data)``: an event to one local client;
        ``start``: a green thread."""
        self.registry = registry
        self._publish = publish
        self._send = send
        self._start = start
        self.interval_s = ttl_s / 3
        self.metrics = metrics or WebMetrics()
        self._lock = threading.Lock()  # the state below, under the threading mode too
        self._live: set[str] = set()  # connections between connect and disconnect
        self.local: dict[Room, dict[str, str]] = {}  # room -> connection -> user
        self._rooms_of: dict[str, set[Room]] = {}  # connection -> rooms
        self.watchers: dict[Room, set[str]] = {}  # room -> local connections watching
        self._dirty: dict[tuple[Room, str], str] = {}  # (room, connection) -> user
        self._stored: set[tuple[Room, str]] = set()  # maybe in Redis: a leave is written
        self._reads: list[_Read] = []
        self._stale: set[Room] = set()  # changes may have gone unannounced
        self._wake = threading.Event()
        self._hurry = threading.Event()  # set at shutdown: no more back-off
        self._idle = threading.Event()
        self._idle.set()
        self._task: Any = None
        self._closed = False

    # -- what the socket handlers note (no I/O) ------------------------------------------
    def connected(self, sid: str) -> None:
        with self._lock:
            self._live.add(sid)

    def join(self, sid: str, namespace: str, room: str, user: str) -> None:
        """``sid`` is in ``room`` (ignored once it has disconnected: a subscription
        answered after its connection dropped must not leave it present)."""
        key = (namespace, room)
        with self._lock:
            if sid not in self._live:
                return
            conns = self.local.setdefault(key, {})
            if sid in conns:
                return
            conns[sid] = user
            self._rooms_of.setdefault(sid, set()).add(key)
            self._dirty[(key, sid)] = user
        self._kick()

    def leave(self, sid: str, namespace: str, room: str) -> None:
        key = (namespace, room)
        with self._lock:
            self._leave(sid, key)
            rooms = self._rooms_of.get(sid)
            if rooms is not None:
                rooms.discard(key)
                if not rooms:
                    del self._rooms_of[sid]
        self._kick()

    def disconnected(self, sid: str) -> None:
        with self._lock:
            self._live.discard(sid)
            for key in self._rooms_of.pop(sid, ()):
                self._leave(sid, key)
        self._kick()

    def _leave(self, sid: str, key: Room) -> None:
        conns = self.local.get(key)
        user = conns.pop(sid, None) if conns is not None else None
        if user is None:
            return
        if not conns:
            del self.local[key]
        self._unwatch(sid, key)
        self._dirty[(key, sid)] = user

    # -- watching and reading --------------------------------------------------------------
    def watch(self, sid: str, namespace: str, room: str) -> Snapshot | None:
        """Send this client the room's changes from now on, and read the room; None if
        the client is not in the room. Raises ``PresenceUnavailable``."""
        key = (namespace, room)
        with self._lock:
            if sid not in self.local.get(key, ()):
                return None
            self.watchers.setdefault(key, set()).add(sid)
        try:
            return self.read(namespace, room)
        except PresenceUnavailable:
            self.unwatch(sid, namespace, room)
            raise

    def unwatch(self, sid: str, namespace: str, room: str) -> None:
        with self._lock:
            self._unwatch(sid, (namespace, room))

    def _unwatch(self, sid: str, key: Room) -> None:
        watching = self.watchers.get(key)
        if watching is not None:
            watching.discard(sid)
            if not watching:
                del self.watchers[key]

    def read(self, namespace: str, room: str, timeout_s: float = READ_TIMEOUT_S) -> Snapshot:
        """Who is in a room (after this server's changes noted so far are written).
        Raises ``PresenceUnavailable``."""
        request = _Read((namespace, room))
        with self._lock:
            self._reads.append(request)
        self._kick()
        if not request.done.wait(timeout_s):
            raise PresenceUnavailable("presence: Redis did not answer in time")
        if request.result is None:
            raise PresenceUnavailable(f"presence: {request.error}")
        return request.result

    def flush(self, timeout_s: float) -> bool:
        """Wait until what was noted is written (at shutdown); False if not in time."""
        deadline = time.monotonic() + timeout_s
        self._hurry.set()
        while self._dirty or self._reads or not self._idle.is_set():
            if time.monotonic() > deadline:
                return False
            self._kick()
            time.sleep(0.02)
        return True

    def leave_all(self, timeout_s: float) -> bool:
        """At shutdown: every connection of this server leaves its rooms, written before
        the process ends (False if Redis did not take it in time: the ttl does it)."""
        with self._lock:
            sids = list(self._rooms_of)
        for sid in sids:
            self.disconnected(sid)
        written = self.flush(timeout_s)
        self.close()
        return written

    def close(self) -> None:
        """Stop the writer (after its round under way)."""
        self._closed = True
        self._wake.set()

    def on_gap(self) -> None:
        """The queue subscription was lost and is back: changes announced meanwhile never
        reached this server. Its watching clients are told to read their rooms again."""
        with self._lock:
            rooms = list(self.watchers)
        self._tell_stale(rooms)

    # -- the changes of every server, from the queue listener --------------------------------
    def deliver(self, message: dict) -> None:
        """Send announced changes to the local clients watching their rooms."""
        announced = message.get("changes")
        for change in announced if isinstance(announced, list) else ():
            if not (
                isinstance(change, list)
                and len(change) == 5
                and all(isinstance(part, str) for part in change[:4])
                and type(change[4]) is int
            ):
                continue
            namespace, room, kind, user, seq = change
            data = {"room": room, "type": kind, "user": user, "seq": seq}
            for sid in self._watching((namespace, room)):
                self._send(sid, namespace, PRESENCE_EVENT, [data])
        stale = message.get("stale")
        if isinstance(stale, list):
            rooms = [
                (r[0], r[1])
                for r in stale
                if isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r)
            ]
            self._tell_stale(rooms)

    def _watching(self, key: Room) -> list[str]:
        with self._lock:
            return list(self.watchers.get(key, ()))

    def _tell_stale(self, rooms: Iterable[Room]) -> None:
        for namespace, room in rooms:
            for sid in self._watching((namespace, room)):
                self._send(sid, namespace, PRESENCE_EVENT, [{"room": room, "type": STALE}])

    # -- the writer -------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._task is None:
            with self._lock:
                if self._task is None:
                    self._task = self._start(self._run)
        self._wake.set()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval_s
        failures = 0
        while not self._closed:
            self._wake.wait(max(0.0, next_beat - time.monotonic()))
            if self._closed:
                return
            self._wake.clear()
            self._idle.clear()
            try:
                if self._dirty or self._reads:
                    self._write()
                if time.monotonic() >= next_beat:
                    self._heartbeat()  # failed: tried again after the back-off
                    next_beat = time.monotonic() + self.interval_s
                if self._stale:
                    self._announce([])  # Redis answers again: the stale notices
                failures = 0
            except Exception as exc:  # presence must outlive an outage or any one failure
                failures += 1
                if isinstance(exc, ERRORS):
                    log.warning(
                        "presence.redis_error", extra={"error": str(exc), "failures": failures}
                    )
                else:
                    log.exception("presence.failed", extra={"error": str(exc)})
                self._idle.set()
                # A lost script is loaded by the next try: at once, the first time.
                lost = isinstance(exc, _ScriptLost) and failures == 1
                # Not woken by new work (every connect while Redis is down would make a
                # try), only by a shutdown waiting for what is left.
                delay = 0 if lost else RETRY_DELAY.compute(failures)
                if self._hurry.wait(delay):  # shutting down: a try every 0.1 s
                    time.sleep(min(delay, 0.1))
                self._wake.set()  # what is still to write, at the next round
                continue
            if self._dirty or self._reads:
                self._wake.set()  # more than one round's worth
            self._idle.set()

    def _write(self) -> None:
        """Write the noted changes, then answer the reads, in one round trip; what
        fails is kept for the next try."""
        with self._lock:
            taken = dict(list(self._dirty.items())[:PIPELINE_CHUNK])
            for entry in taken:
                del self._dirty[entry]
            reads: list[_Read] = []
            if not self._dirty:  # a read comes after every change noted before it
                reads, self._reads = self._reads, []
                for r in reads:
                    r.again = False
            ops: list[tuple[str, Room, str, str]] = []
            for (key, sid), user in taken.items():
                if sid in self.local.get(key, ()):
                    ops.append((JOINED, key, user, sid))
                    self._stored.add((key, sid))  # from now on maybe there
                elif (key, sid) in self._stored:
                    ops.append((LEFT, key, user, sid))
        try:
            commands = [self._command(*op) for op in ops]
            commands += [self.registry.read_command(*r.room) for r in reads]
            replies = self._execute(commands, [key for _, key, _, _ in ops])
            failed = self._settle(ops, reads, replies)
        except Exception as exc:
            with self._lock:
                for entry, user in taken.items():
                    self._dirty.setdefault(entry, user)  # a newer note wins
            for r in reads:
                r.error = str(exc)
            raise
        finally:
            for r in reads:
                if not r.again:
                    r.done.set()
        if failed is not None:
            raise failed

    def _settle(self, ops: list, reads: list[_Read], replies: list[Any]) -> Exception | None:
        """What each reply says: written (its changes announced) or to try again; the
        reads answered. Returns the first error to back off on, if any."""
        announced: list[list[Any]] = []
        failed = None
        for (kind, key, user, sid), reply in zip(ops, replies[: len(ops)], strict=True):
            if isinstance(reply, Exception):
                failed = failed or _as_error(reply)
                with self._lock:
                    self._dirty.setdefault((key, sid), user)
                continue
            if kind == LEFT:
                with self._lock:
                    if (key, sid) not in self._dirty:
                        self._stored.discard((key, sid))
            announced += _announced(key, changes(reply))
        for r, reply in zip(reads, replies[len(ops) :], strict=True):
            if isinstance(reply, NoScriptError):
                r.again = True
                with self._lock:
                    self._reads.append(r)
                failed = failed or _as_error(reply)
            elif isinstance(reply, Exception):
                r.error = str(reply)
                failed = failed or _as_error(reply)
            else:
                r.result, made = snapshot(reply)
                announced += _announced(r.room, made)
        self._announce(announced)
        return failed

    def _command(self, kind: str, key: Room, user: str, sid: str) -> tuple:
        if kind == JOINED:
            return self.registry.join_command(*key, user, sid)
        return self.registry.leave_command(*key, user, sid)

    def _heartbeat(self) -> None:
        """Refresh this server's connections in every room, a chunk per script, and
        announce each round trip's changes as it comes back."""
        with self._lock:
            rooms = [(key, list(conns.items())) for key, conns in self.local.items()]
        chunks = [
            (key, conns[i : i + HEARTBEAT_CHUNK])
            for key, conns in rooms
            for i in range(0, len(conns), HEARTBEAT_CHUNK)
        ]
        self.metrics.presence_scripts.labels("heartbeat").inc(len(chunks))
        failed = None
        for start in range(0, len(chunks), PIPELINE_CHUNK):
            batch = chunks[start : start + PIPELINE_CHUNK]
            commands = [
                self.registry.heartbeat_command(*key, [(u, sid) for sid, u in chunk])
                for key, chunk in batch
            ]
            replies = self._execute(commands, [key for key, _ in batch])
            announced: list[list[Any]] = []
            for (key, _), reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    failed = failed or _as_error(reply)
                else:
                    announced += _announced(key, changes(reply))
            self._announce(announced)
        if failed is not None:
            raise failed

    def _execute(self, commands: list[tuple], rooms: list[Room]) -> list[Any]:
        """One round trip. A lost script is loaded again by the next command made; a
        round trip that fails may have run in part: its ``rooms`` are stale."""
        if not commands:
            return []
        self.metrics.presence_round_trips.inc()
        pipe = self.registry.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception:
            with self._lock:
                self._stale.update(rooms)
            raise
        for reply in replies:
            if isinstance(reply, Exception):
                self.registry.unloaded(reply)
        return replies

    def _announce(self, announced: list[list[Any]]) -> None:
        with self._lock:
            stale, self._stale = self._stale, set()
        if not announced and not stale:
            return
        message: dict[str, Any] = {"method": PRESENCE_METHOD, "changes": announced}
        if stale:
            message["stale"] = [list(room) for room in stale]
        if self._publish(message) is None:  # not sent: its rooms' watchers read again
            with self._lock:
                self._stale.update(stale)
                self._stale.update((c[0], c[1]) for c in announced)


def _announced(key: Room, made: Iterable[Change]) -> list[list[Any]]:
    return [[key[0], key[1], c.kind, c.user, c.seq] for c in made]


def _as_error(reply: Exception) -> Exception:
    """A script's error reply, as what the writer backs off on (a lost script is not:
    the next try loads it)."""
    if isinstance(reply, NoScriptError):
        return _ScriptLost(str(reply))
    return reply if isinstance(reply, ERRORS) else redis.RedisError(str(reply))
