"""The bridge's own connection for its batches: a round trip is sent, the next batch is
prepared while Redis runs it, then its replies are read.

Commands are packed by hiredis in one call each (redis-py's pipeline encodes argument by
argument in Python, which costs more than the rest of a batch's work). On a Redis
Cluster the round trip is a redis-py pipeline, sent and read at once: it finds each
slot's node and follows MOVED, which a connection of our own would have to redo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import ResponseError

from streambridge.redis_conn import as_cluster

Command = tuple[Any, ...]


class Link:
    """Sends commands and reads their replies later, on one connection held for it.

    Arguments are str (UTF-8), bytes or numbers. Replies come back in order, an error
    reply as its exception, as from ``pipeline.execute(raise_on_error=False)``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._connection: Any = None
        self._sent: list[str] = []  # the names of the commands whose replies are unread
        self._replies: list[Any] | None = None  # a cluster's, read at once

    def send(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` in one write; ``replies()`` reads what they answer."""
        if self._sent or self._replies is not None:
            # The last round trip's replies were never read (an error in between): they
            # would be taken for this one's. Start on a new connection.
            self.close()
        if as_cluster(self.client) is not None:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            self._replies = pipe.execute(raise_on_error=False)
            return
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        packed = b"".join([hiredis.pack_command(command) for command in commands])
        try:
            self._connection.send_packed_command([packed])
        except BaseException:
            self.close()
            raise
        self._sent = [str(command[0]).upper() for command in commands]

    def replies(self) -> list[Any]:
        """The replies of what ``send`` sent, in order; a lost connection raises."""
        if self._replies is not None:
            replies, self._replies = self._replies, None
            return replies
        replies = []
        try:
            for name in self._sent:
                try:
                    replies.append(self.client.parse_response(self._connection, name))
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self.close()
            raise
        self._sent = []
        return replies

    def close(self) -> None:
        """Drop the connection (a new one is taken on the next send) and what it owes."""
        self._sent, self._replies = [], None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.disconnect()
            self.client.connection_pool.release(connection)
