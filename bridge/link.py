"""The bridge's own connection for its batches: a round trip is sent, the next batch is
prepared while Redis runs it, then its replies are read.

Commands are packed by hiredis in one call each (redis-py's pipeline encodes argument by
argument in Python, which costs more than the rest of a batch's work). On a Redis
Cluster the round trip is a redis-py pipeline, sent and read at once: it finds each
slot's node and follows MOVED, which a connection of our own would have to redo.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.exceptions import ResponseError

from streambridge.redis_conn import as_cluster

Command = tuple[Any, ...]


@dataclass(frozen=True)
class Packed:
    """A command packed ahead of its round trip (while Redis works on the one before)."""

    command: Command
    wire: bytes | None  # None on a cluster: its pipeline packs


class Link:
    """Sends commands and reads their replies later, on one connection held for it.

    Arguments are str (UTF-8), bytes or numbers. Replies come back in order, an error
    reply as its exception, as from ``pipeline.execute(raise_on_error=False)``; on a
    single Redis as Redis sends them (no redis-py response callback: an XREADGROUP's
    fields are a flat list), on a cluster as redis-py's pipeline parses them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._connection: Any = None
        # Per round trip sent and not read: how many replies (a single Redis), or the
        # replies themselves (a cluster's pipeline reads at once).
        self._rounds: deque[int | list[Any]] = deque()

    def pack(self, command: Command) -> Packed:
        """``command`` ready to send."""
        cluster = as_cluster(self.client) is not None
        return Packed(command, None if cluster else hiredis.pack_command(command))

    def send(self, commands: Sequence[Command | Packed]) -> None:
        """Send ``commands`` in one write, a round trip; ``replies()`` reads what they
        answer. Several may be in flight, their replies read in the order sent."""
        ready = [c if isinstance(c, Packed) else self.pack(c) for c in commands]
        if as_cluster(self.client) is not None:
            pipe = self.client.pipeline(transaction=False)
            for packed in ready:
                pipe.execute_command(*packed.command)
            self._rounds.append(pipe.execute(raise_on_error=False))
            return
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        try:
            # A health check (PING) would read the reply of a round trip in flight.
            wire = [b"".join(p.wire or b"" for p in ready)]
            self._connection.send_packed_command(wire, check_health=not self._rounds)
        except BaseException:
            self.close()
            raise
        self._rounds.append(len(ready))

    def replies(self) -> list[Any]:
        """The replies of the oldest round trip not read yet, in order; a lost
        connection raises."""
        sent = self._rounds.popleft()
        if isinstance(sent, list):
            return sent
        replies = []
        try:
            for _ in range(sent):
                try:
                    replies.append(self._connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self.close()
            raise
        return replies

    def close(self) -> None:
        """Drop the connection (a new one is taken on the next send) and the replies it
        still owes: nothing is read by mistake as the answer to a later round trip."""
        self._rounds.clear()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.disconnect()
            self.client.connection_pool.release(connection)
