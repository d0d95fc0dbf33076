"""Who is connected to a room, across web servers, correct after a crash.

Per room, two keys (``keys.presence``): the connections, a sorted set of
``<len(user)>:<user><connection id>`` scored by when each expires, and per user its
number of live connections (a hash). Web servers add a connection when it joins, remove
it when it leaves, and refresh the expiry of their own connections by heartbeat; a
connection of a server that died (SIGKILL, power loss) is dropped once its expiry has
passed, at the latest ``ttl`` after its last heartbeat. Every script drops the expired
connections of its room and returns the users that left with them, so whoever runs it
can announce them, once. A user is present while any of its connections is
(two tabs leave when the last closes). Both keys expire when no server refreshes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streambridge import keys
from streambridge.history import Script

_REAP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local conns, users = KEYS[1], KEYS[2]
local function user_of(member)
  local colon = string.find(member, ':', 1, true)
  local n = tonumber(string.sub(member, 1, colon - 1))
  return string.sub(member, colon + 1, colon + n)
end
-- Drops one connection; the user if it was its last.
local function drop(member, gone)
  if redis.call('ZREM', conns, member) == 1 then
    local user = user_of(member)
    if redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
      gone[#gone + 1] = user
      return 1
    end
  end
  return 0
end
-- The expired connections dropped; the users that left with them.
local function reap()
  local gone = {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', conns, '-inf', now)) do
    drop(member, gone)
  end
  return gone
end
-- Adds (or refreshes) one connection; 1 if its user was not present before.
local function add(member, ttl)
  if redis.call('ZADD', conns, now + ttl, member) == 1 then
    return redis.call('HINCRBY', users, user_of(member), 1) == 1 and 1 or 0
  end
  return 0
end
local function keep(ttl)
  redis.call('PEXPIRE', conns, 2 * ttl)
  redis.call('PEXPIRE', users, 2 * ttl)
end
"""

JOIN = (
    _REAP
    + """
local gone = reap()
local first = add(ARGV[1], tonumber(ARGV[2]))
keep(tonumber(ARGV[2]))
return {first, gone}
"""
)
"""KEYS: a room's connections and users. ARGV: member, ttl in ms. Returns whether the
user was not present before, and the users gone by expiry."""

LEAVE = (
    _REAP
    + """
local gone = reap()
local last = drop(ARGV[1], {})
return {last, gone}
"""
)
"""KEYS: as JOIN. ARGV: member. Returns whether that was the user's last connection,
and the users gone by expiry (others)."""

HEARTBEAT = (
    _REAP
    + """
-- Its own connections first: one that had expired but was not dropped yet lives on.
local ttl, back = tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  if add(ARGV[i], ttl) == 1 then back[#back + 1] = user_of(ARGV[i]) end
end
local gone = reap()
keep(ttl)
return {back, gone}
"""
)
"""KEYS: as JOIN. ARGV: ttl in ms, then the server's members in the room. Returns the
users present again (their connection had expired: the server was paused past the ttl)
and the users gone by expiry."""

READ = (
    _REAP
    + """
local gone = reap()
return {redis.call('HGETALL', users), gone}
"""
)
"""KEYS: as JOIN. Returns the users' connection counts (flat) and the users gone."""


def member(user: str, connection: str) -> str:
    """A connection's member: the user's name with its length in UTF-8 bytes first (any
    name; Lua counts bytes)."""
    return f"{len(user.encode())}:{user}{connection}"


@dataclass(frozen=True)
class Change:
    """What a presence script saw: ``present`` (joined first / left last / back),
    and the users that left by expiry (whose leave the caller announces)."""

    changed: bool
    gone: list[str]


class Presence:
    """The presence of rooms of one stream's namespaces, in Redis."""

    def __init__(self, client: Any, stream: str, ttl_s: float) -> None:
        self.client = client
        self.stream = stream
        self.ttl_ms = int(ttl_s * 1000)
        # Registered on first use: a process may start while Redis is down.
        self._join = Script(client, JOIN)
        self._leave = Script(client, LEAVE)
        self._heartbeat = Script(client, HEARTBEAT)
        self._read = Script(client, READ)

    def keys(self, namespace: str, room: str) -> list[str]:
        return list(keys.presence(self.stream, namespace, room))

    def join(self, namespace: str, room: str, user: str, connection: str) -> Change:
        """A connection joins; ``changed``: its user was not present before."""
        first, gone = self._join(
            keys=self.keys(namespace, room), args=[member(user, connection), self.ttl_ms]
        )
        return Change(bool(first), [str(u) for u in gone])

    def leave(self, namespace: str, room: str, user: str, connection: str) -> Change:
        """A connection leaves; ``changed``: it was its user's last."""
        last, gone = self._leave(keys=self.keys(namespace, room), args=[member(user, connection)])
        return Change(bool(last), [str(u) for u in gone])

    def heartbeat(
        self, namespace: str, room: str, members: list[tuple[str, str]]
    ) -> tuple[list[str], list[str]]:
        """Refresh this server's ``(user, connection)`` in a room; returns the users
        present again and the users gone by expiry."""
        back, gone = self._heartbeat(
            keys=self.keys(namespace, room),
            args=[self.ttl_ms, *(member(u, c) for u, c in members)],
        )
        return [str(u) for u in back], [str(u) for u in gone]

    def read(self, namespace: str, room: str) -> tuple[dict[str, int], list[str]]:
        """Who is in the room (user -> live connections), and the users gone by expiry
        (the caller announces their leave)."""
        flat, gone = self._read(keys=self.keys(namespace, room), args=[])
        counts = {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return counts, [str(u) for u in gone]
