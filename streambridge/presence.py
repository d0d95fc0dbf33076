"""Who is connected to a room, across web servers, correct after a crash.

Per room, two keys (``keys.presence``): the connections, a sorted set of
``<len(user)>:<user><connection id>`` scored by when each expires, and a hash of each
user's number of live connections (``u<user>``), all connections (``n``) and the last
change's number (``seq``). Web servers add a connection when it joins, remove
it when it leaves, and refresh the expiry of their own connections by heartbeat; a
connection of a server that died (SIGKILL, power loss) is dropped once its expiry has
passed, at the latest ``ttl`` after its last heartbeat. Every script drops the expired
connections of its room first. A user is present while any of its connections is (two
tabs leave when the last closes). Both keys expire when no server refreshes them; one
lost without the other (evicted) is made good again by the next heartbeat.

Each change of who is present (a user joins: its first connection; leaves: its last)
gets the room's next number, ``seq``, and the script that made it returns it, so whoever
ran it can announce it, once. Numbers only grow, also after the keys expired or Redis
lost them (a number is at least Redis's clock in microseconds): a reader that got the
room with its number ignores any change numbered before it, whatever the order they
arrive in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streambridge import keys
from streambridge.history import Script

JOINED, LEFT = "join", "leave"

SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local conns, users = KEYS[1], KEYS[2]
local changes, seq = {}, nil
-- The users hash: 'u' .. name -> its live connections; 'n': all connections (to notice
-- that one of the two keys was lost); 'seq': the last change's number.
local function user_of(member)
  local colon = string.find(member, ':', 1, true)
  local n = tonumber(string.sub(member, 1, colon - 1))
  return string.sub(member, colon + 1, colon + n)
end
-- A change of who is present, numbered after every change before it.
local function note(kind, user)
  if seq == nil then
    seq = math.max((tonumber(redis.call('HGET', users, 'seq')) or 0) + 1, now_us)
  else
    seq = seq + 1
  end
  changes[#changes + 1] = kind
  changes[#changes + 1] = user
  changes[#changes + 1] = string.format('%.0f', seq)
end
local function save()
  if seq ~= nil then redis.call('HSET', users, 'seq', string.format('%.0f', seq)) end
end
-- Drops one connection; its user leaves if it was its last.
local function drop(member)
  if redis.call('ZREM', conns, member) == 1 then
    local user = user_of(member)
    redis.call('HINCRBY', users, 'n', -1)
    if redis.call('HINCRBY', users, 'u' .. user, -1) <= 0 then
      redis.call('HDEL', users, 'u' .. user)
      note('leave', user)
    end
  end
end
-- The expired connections dropped.
local function reap()
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', conns, '-inf', now)) do
    drop(member)
  end
end
-- Adds (or refreshes) one connection; its user joins if it was not present.
local function add(member, ttl)
  if redis.call('ZADD', conns, now + ttl, member) == 1 then
    local user = user_of(member)
    redis.call('HINCRBY', users, 'n', 1)
    if redis.call('HINCRBY', users, 'u' .. user, 1) == 1 then note('join', user) end
  end
end
local function keep(ttl)
  redis.call('PEXPIRE', conns, 2 * ttl)
  redis.call('PEXPIRE', users, 2 * ttl)
end
-- One key lost without the other (evicted): the counts made again from the connections.
local function repair()
  if (tonumber(redis.call('HGET', users, 'n')) or 0) == redis.call('ZCARD', conns) then
    return
  end
  local counted, total = {}, 0
  for _, member in ipairs(redis.call('ZRANGE', conns, 0, -1)) do
    local user = user_of(member)
    counted[user] = (counted[user] or 0) + 1
    total = total + 1
  end
  local flat = redis.call('HGETALL', users)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 1) == 'u' then
      local user = string.sub(flat[i], 2)
      if counted[user] == nil then
        redis.call('HDEL', users, flat[i])
        note('leave', user)
      else
        redis.call('HSET', users, flat[i], counted[user])
        counted[user] = nil
      end
    end
  end
  for user, n in pairs(counted) do
    redis.call('HSET', users, 'u' .. user, n)
    note('join', user)
  end
  redis.call('HSET', users, 'n', total)
end

local op = ARGV[1]
if op == 'join' then
  reap()
  add(ARGV[2], tonumber(ARGV[3]))
  keep(tonumber(ARGV[3]))
elseif op == 'leave' then
  reap()
  drop(ARGV[2])
elseif op == 'heartbeat' then
  repair()
  -- Its own connections before the reaping: one that expired but was not dropped yet
  -- lives on.
  local ttl = tonumber(ARGV[2])
  for i = 3, #ARGV do add(ARGV[i], ttl) end
  reap()
  keep(ttl)
elseif op == 'read' then
  reap()
  save()
  local flat = redis.call('HGETALL', users)
  local present = {}
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 1) == 'u' then
      present[#present + 1] = string.sub(flat[i], 2)
      present[#present + 1] = flat[i + 1]
    end
  end
  return {present, redis.call('HGET', users, 'seq') or '0', changes}
else
  return redis.error_reply('unknown presence operation ' .. tostring(op))
end
save()
return changes
"""
"""KEYS: a room's connections and users. ARGV: the operation, then

* ``join``, member, ttl in ms: the expired connections' users that left, then the
  user if it joined (it was not present);
* ``leave``, member: likewise, the user if that was its last connection;
* ``heartbeat``, ttl in ms, the server's members in the room: users present again
  (their connection had expired: the server was paused past the ttl, or Redis lost the
  keys), then users gone by expiry;
* ``read``: the users' connection counts (flat), the room's last change number and
  the changes (users gone by expiry).

Every operation but ``read`` returns its changes, flat: kind, user, seq."""


def member(user: str, connection: str) -> str:
    """A connection's member: the user's name with its length in UTF-8 bytes first (any
    name; Lua counts bytes)."""
    if not user:
        raise ValueError("a present user has a name")
    return f"{len(user.encode())}:{user}{connection}"


@dataclass(frozen=True)
class Change:
    """A user joined (its first connection) or left (its last), numbered ``seq``."""

    kind: str  # JOINED or LEFT
    user: str
    seq: int


@dataclass(frozen=True)
class Snapshot:
    """Who is in a room: user -> live connections, as of change ``seq``."""

    users: dict[str, int]
    seq: int


def changes(reply: Any) -> list[Change]:
    """The changes a script returned."""
    return [
        Change(str(reply[i]), str(reply[i + 1]), int(reply[i + 2])) for i in range(0, len(reply), 3)
    ]


def snapshot(reply: Any) -> tuple[Snapshot, list[Change]]:
    """What the read script returned: the room, and the changes it made."""
    flat, seq, made = reply
    users = {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return Snapshot(users, int(seq)), changes(made)


class Presence:
    """The presence of rooms of one stream's namespaces, in Redis. Each operation is a
    direct call, or a ``*_command`` to send in a pipeline (with ``changes`` or
    ``snapshot`` to read its reply, and ``unloaded`` for a Redis that lost the script)."""

    def __init__(self, client: Any, stream: str, ttl_s: float) -> None:
        self.client = client
        self.stream = stream
        self.ttl_ms = int(ttl_s * 1000)
        # Registered on first use: a process may start while Redis is down.
        self._script = Script(client, SCRIPT)

    def keys(self, namespace: str, room: str) -> list[str]:
        return list(keys.presence(self.stream, namespace, room))

    # -- each operation's arguments -------------------------------------------------------
    def _join(self, namespace: str, room: str, user: str, connection: str) -> tuple:
        return self.keys(namespace, room), [JOINED, member(user, connection), self.ttl_ms]

    def _leave(self, namespace: str, room: str, user: str, connection: str) -> tuple:
        return self.keys(namespace, room), [LEFT, member(user, connection)]

    def _heartbeat(self, namespace: str, room: str, members: list[tuple[str, str]]) -> tuple:
        args = ["heartbeat", self.ttl_ms, *(member(u, c) for u, c in members)]
        return self.keys(namespace, room), args

    def _read(self, namespace: str, room: str) -> tuple:
        return self.keys(namespace, room), ["read"]

    # -- as commands, for a pipeline ----------------------------------------------------
    def join_command(self, namespace: str, room: str, user: str, connection: str) -> tuple:
        return self._script.command(*self._join(namespace, room, user, connection))

    def leave_command(self, namespace: str, room: str, user: str, connection: str) -> tuple:
        return self._script.command(*self._leave(namespace, room, user, connection))

    def heartbeat_command(self, namespace: str, room: str, members: list[tuple[str, str]]) -> tuple:
        return self._script.command(*self._heartbeat(namespace, room, members))

    def read_command(self, namespace: str, room: str) -> tuple:
        return self._script.command(*self._read(namespace, room))

    def unloaded(self, reply: Any) -> bool:
        """Whether ``reply`` says Redis lost the script (it is loaded again when next used)."""
        return self._script.unloaded(reply)

    # -- direct calls -------------------------------------------------------------------
    def join(self, namespace: str, room: str, user: str, connection: str) -> list[Change]:
        """A connection joins: the expired connections' users that left, then its
        user if it was not present before."""
        return changes(self._script(*self._join(namespace, room, user, connection)))

    def leave(self, namespace: str, room: str, user: str, connection: str) -> list[Change]:
        """A connection leaves: changes as ``join`` (its user if it was its last)."""
        return changes(self._script(*self._leave(namespace, room, user, connection)))

    def heartbeat(self, namespace: str, room: str, members: list[tuple[str, str]]) -> list[Change]:
        """Refresh this server's ``(user, connection)`` in a room: the users present
        again, then the users gone by expiry."""
        return changes(self._script(*self._heartbeat(namespace, room, members)))

    def read(self, namespace: str, room: str) -> tuple[Snapshot, list[Change]]:
        """Who is in the room, and the users gone by expiry (the caller announces them)."""
        return snapshot(self._script(*self._read(namespace, room)))
