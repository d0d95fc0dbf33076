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
from streambridge.webapp.ext.metrics import WebMetrics

from streambridge.contract import RESERVED_PREFIX
from streambridge.presence import Change, Presence, Snapshot, changes, snapshot
from streambridge.redis_conn import ERRORS

log = logging.getLogger(__name__)

PRESENCE_EVENT = RESERVED_PREFIX + "presence"
"""To a watching client: ``{"room", "type": "join"|"leave", "user", "seq"}``, or
``{"room", "type": "stale"}``: changes may have been missed, read the room again."""
STALE = "stale"
PRESENCE_METHOD = "streambridge.presence"
"""Queue message: ``{"method", "changes": [[namespace, room, kind, user, seq], ...]}``."""
HEARTBEAT_CHUNK = 500  # connections per heartbeat script: Redis stays responsive
PIPELINE_CHUNK = 1_000  # scripts per round trip
READ_TIMEOUT_S = 5.0
RETRY_DELAY = EqualJitterBackoff(cap=5.0, base=0.1)

Room = tuple[str, str]  # (namespace, room)


class PresenceUnavailable(RuntimeError):
    """Redis did not answer a presence read in time."""


@dataclass
class _Read:
    room: Room
    done: threading.Event = field(default_factory=threading.Event)
    result: Snapshot | None = None
    error: str | None = None


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
        """``publish``: a message to every web server's queue listener; ``send(sid,
        namespace, event, data)``: an event to one local client; ``start``: a green
        thread."""
        self.registry = registry
        self._publish = publish
        self._send = send
        self._start = start
        self.interval_s = ttl_s / 3
        self.metrics = metrics or WebMetrics()
        self._lock = threading.Lock()  # the maps below, under the threading mode too
        self.local: dict[Room, dict[str, str]] = {}  # room -> connection -> user
        self._rooms_of: dict[str, set[Room]] = {}  # connection -> rooms
        self.watchers: dict[Room, set[str]] = {}  # room -> local connections watching
        self._dirty: dict[tuple[Room, str], str] = {}  # (room, connection) -> user
        self._stored: set[tuple[Room, str]] = set()  # written to Redis (as far as known)
        self._reads: list[_Read] = []
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._task: Any = None

    # -- what the socket handlers note (no I/O) ------------------------------------------
    def join(self, sid: str, namespace: str, room: str, user: str) -> None:
        key = (namespace, room)
        with self._lock:
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
        watching = self.watchers.get(key)
        if watching is not None:
            watching.discard(sid)
            if not watching:
                del self.watchers[key]
        self._dirty[(key, sid)] = user

    def tracks(self, sid: str, namespace: str, room: str) -> bool:
        return sid in self.local.get((namespace, room), ())

    # -- watching and reading --------------------------------------------------------------
    def watch(self, sid: str, namespace: str, room: str) -> Snapshot:
        """Send this client the room's changes from now on, and read the room. The caller
        checked that the client is in it (``tracks``). Raises ``PresenceUnavailable``."""
        with self._lock:
            self.watchers.setdefault((namespace, room), set()).add(sid)
        return self.read(namespace, room)

    def unwatch(self, sid: str, namespace: str, room: str) -> None:
        with self._lock:
            watching = self.watchers.get((namespace, room))
            if watching is not None:
                watching.discard(sid)
                if not watching:
                    del self.watchers[(namespace, room)]

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
        return self.flush(timeout_s)

    def on_gap(self) -> None:
        """The queue subscription was lost and is back: changes announced meanwhile never
        reached this server. Its watching clients are told to read their rooms again."""
        for (namespace, room), watching in list(self.watchers.items()):
            for sid in list(watching):
                self._send(sid, namespace, PRESENCE_EVENT, [{"room": room, "type": STALE}])

    # -- the changes of other servers, from the queue listener ------------------------------
    def deliver(self, message: dict) -> None:
        """Send announced changes to the local clients watching their rooms."""
        announced = message.get("changes")
        if not isinstance(announced, list):
            return
        for change in announced:
            if not (
                isinstance(change, list)
                and len(change) == 5
                and all(isinstance(part, str) for part in change[:4])
                and type(change[4]) is int
            ):
                continue
            namespace, room, kind, user, seq = change
            watching = self.watchers.get((namespace, room))
            if not watching:
                continue
            data = {"room": room, "type": kind, "user": user, "seq": seq}
            for sid in list(watching):
                self._send(sid, namespace, PRESENCE_EVENT, [data])

    # -- the writer -------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._task is None:
            self._task = self._start(self._run)
        self._wake.set()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval_s
        failures = 0
        while True:
            self._wake.wait(max(0.0, next_beat - time.monotonic()))
            self._wake.clear()
            self._idle.clear()
            try:
                while self._dirty or self._reads:
                    self._write()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.interval_s
                    self._heartbeat()
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
                time.sleep(RETRY_DELAY.compute(failures))
                self._wake.set()  # what is still to write, at the next round
                continue
            self._idle.set()

    def _write(self) -> None:
        """Write the noted changes and answer the reads (they come after), in one round
        trip; what fails is kept for the next try."""
        with self._lock:
            taken = dict(list(self._dirty.items())[:PIPELINE_CHUNK])
            for entry in taken:
                del self._dirty[entry]
            reads, self._reads = self._reads, []
            ops: list[tuple[str, Room, str, str]] = []
            for (key, sid), user in taken.items():
                if sid in self.local.get(key, ()):
                    ops.append(("join", key, user, sid))
                elif (key, sid) in self._stored:
                    ops.append(("leave", key, user, sid))
        commands = [self._command(*op) for op in ops]
        commands += [self.registry.read_command(*r.room) for r in reads]
        for kind, *_ in ops:
            self.metrics.presence_scripts.labels(kind).inc()
        if reads:
            self.metrics.presence_scripts.labels("read").inc(len(reads))
        try:
            replies = self._execute(commands)
        except ERRORS as exc:
            with self._lock:
                for entry, user in taken.items():
                    self._dirty.setdefault(entry, user)  # a newer note wins
            for r in reads:
                r.error = str(exc)
                r.done.set()
            raise
        announced: list[list[Any]] = []
        failed = None
        for (kind, key, user, sid), reply in zip(ops, replies[: len(ops)], strict=True):
            if isinstance(reply, Exception):
                failed = failed or reply
                with self._lock:
                    self._dirty.setdefault((key, sid), user)
                continue
            if kind == "join":
                self._stored.add((key, sid))
            else:
                self._stored.discard((key, sid))
            announced += _announced(key, changes(reply))
        for r, reply in zip(reads, replies[len(ops) :], strict=True):
            if isinstance(reply, Exception):
                r.error = str(reply)
                failed = failed or reply
            else:
                r.result, made = snapshot(reply)
                announced += _announced(r.room, made)
            r.done.set()
        self._announce(announced)
        if failed is not None and not self.registry.unloaded(failed):
            raise _as_error(failed)

    def _command(self, kind: str, key: Room, user: str, sid: str) -> tuple:
        if kind == "join":
            return self.registry.join_command(*key, user, sid)
        return self.registry.leave_command(*key, user, sid)

    def _heartbeat(self) -> None:
        """Refresh this server's connections in every room, a chunk per script."""
        with self._lock:
            rooms = [(key, list(conns.items())) for key, conns in self.local.items()]
        commands, stored, keys = [], [], []
        for key, conns in rooms:
            for i in range(0, len(conns), HEARTBEAT_CHUNK):
                chunk = conns[i : i + HEARTBEAT_CHUNK]
                commands.append(
                    self.registry.heartbeat_command(*key, [(u, sid) for sid, u in chunk])
                )
                keys.append(key)
                stored += [(key, sid) for sid, _ in chunk]
        self.metrics.presence_scripts.labels("heartbeat").inc(len(commands))
        announced: list[list[Any]] = []
        failed = None
        for start in range(0, len(commands), PIPELINE_CHUNK):
            replies = self._execute(commands[start : start + PIPELINE_CHUNK])
            for key, reply in zip(keys[start : start + PIPELINE_CHUNK], replies, strict=True):
                if isinstance(reply, Exception):
                    failed = failed or reply
                else:
                    announced += _announced(key, changes(reply))
        self._stored.update(stored)
        self._announce(announced)
        if failed is not None and not self.registry.unloaded(failed):
            raise _as_error(failed)

    def _execute(self, commands: list[tuple]) -> list[Any]:
        if not commands:
            return []
        self.metrics.presence_round_trips.inc()
        pipe = self.registry.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)

    def _announce(self, announced: list[list[Any]]) -> None:
        if announced:
            self._publish({"method": PRESENCE_METHOD, "changes": announced})


def _announced(key: Room, made: Iterable[Change]) -> list[list[Any]]:
    return [[key[0], key[1], c.kind, c.user, c.seq] for c in made]


def _as_error(reply: Exception) -> Exception:
    """A script's error reply, as what the writer backs off on."""
    return reply if isinstance(reply, ERRORS) else redis.RedisError(str(reply))
