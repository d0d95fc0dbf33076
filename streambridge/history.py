"""Per-room history: what the bridge publishes is also kept, per room, for catch-up.

The bridge publishes a batch with one script that, for each event still pending on its
consumer (one another bridge claimed or published is skipped), gives it the next
*position* of its shard, appends it to its room's history under that position,
PUBLISHes it and acks it: atomically, so an ack means "published" and nothing is
published twice. So in a
shard, positions are handed out in the order events are published and each event is
published once: a client that has everything up to a position can never be passed by a
late publish (a claim, a slower bridge) below it.

Positions look like stream ids (``<ms>-<seq>``) from one clock per shard, so every
room's history of a shard shares one order. A room's history keeps at least
``history_size`` events and is dropped ``history_ttl_s`` (up to 9/8 of it) after its
last one. Each history
records how far back it is complete: Redis's ``max-deleted-entry-id`` is set, when the
history is created, to the newest position a former history of that room could have
held, and ``entries-added`` above ``length`` shows that trimming removed some.

An entry has one field, ``i``: the event's batch item after its position, without the
namespace and room its key names (``queue.item_tail``), so the publish script writes the
same text to the history and to the queue message. Entries written before (fields ``e``,
``c``, ``b``, ``f``) are still read: a history lives at most ``history_ttl_s`` after its
last event.

All of a shard's keys share its cluster slot (see ``keys.history``), so a script can
touch them together and recovery reads one node per shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from streambridge.ids import ZERO, StreamId
from streambridge.queue import parsed_item
from streambridge.redis_conn import field_dict

APPEND = """#!lua
local stream, clock = KEYS[1], KEYS[2]
local group, consumer, queue, command = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local size, ttl = ARGV[5], tonumber(ARGV[6])
local first, last = ARGV[7], ARGV[8]
local head, tail, max_bytes = ARGV[9], ARGV[10], tonumber(ARGV[11])
local open, close, guard = ARGV[12], ARGV[13], ARGV[14]
local window = ARGV[15]
local FIRST, STEP = 16, 4
-- The batch sent before this one stopped part-way if its last event is still pending
-- here: publish nothing, or this batch would overtake the events it left.
if guard ~= '' and #redis.call('XPENDING', stream, group, guard, guard, 1, consumer) > 0 then
  return {0, 0, 'the batch before it stopped part-way', 0}
end
-- The queue messages: the batch's events in order, several to a message, each message
-- at most max_bytes (one event alone may be more). Each is assembled once, by
-- table.concat of the pieces: a Lua string made per event would cost Redis more than
-- the event's history entry.
local between, ending = close .. ',' .. open, close .. tail
local parts, pending_bytes = {head}, 0
local function flush()
  if pending_bytes > 0 then
    parts[#parts + 1] = ending
    redis.call(command, queue, table.concat(parts))
    parts, pending_bytes = {head}, 0
  end
end
-- Still pending on this consumer: no bridge has published it (another bridge that
-- claimed it meanwhile publishes it instead).
local mine = {}
for _, p in ipairs(redis.call('XPENDING', stream, group, first, last, 10000, consumer)) do
  mine[p[1]] = true
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', clock, 'last', 'since')
local ms, seq, since = now, -1, tonumber(state[2]) or now
if state[1] then
  local dash = string.find(state[1], '-', 1, true)
  local last_ms = tonumber(string.sub(state[1], 1, dash - 1))
  if last_ms >= now then ms, seq = last_ms, tonumber(string.sub(state[1], dash + 1)) end
end
-- A former history of a room expired ttl after its last event: it held nothing newer
-- than now - ttl, and nothing at all if the clock is younger than ttl.
local floor = now - ttl
if floor < since then floor = 0 end
local floor_id = string.format('%.0f-0', floor)
local ms_text = string.format('%.0f', ms)
local ms_dash = ms_text .. '-'
-- Event a's item tail appended to a room's history under id; with create false, nil
-- when the room has no history yet.
local function append(key, id, a, create)
  if create then
    return redis.pcall('XADD', key, 'MAXLEN', '~', size, id, 'i', ARGV[a + 1])
  end
  return redis.pcall('XADD', key, 'NOMKSTREAM', 'MAXLEN', '~', size, id, 'i', ARGV[a + 1])
end
local function failed(reply) return type(reply) == 'table' and reply.err ~= nil end
-- An event whose idempotency key another entry of its room took within the window:
-- a retried publish, acked and counted, never published or kept.
local function repeated(entry, idem)
  if idem == '' then return false end
  local first = redis.call('GET', idem)
  if first then return first ~= entry end
  redis.call('SET', idem, entry, 'PX', window)
  return false
end
local handled, done, touched, failure, repeats = 0, {}, {}, '', 0
for i = 3, #KEYS do
  local a = FIRST + (i - 3) * STEP
  local entry, key = ARGV[a], KEYS[i]
  if mine[entry] and repeated(entry, ARGV[a + 3]) then
    mine[entry] = nil
    done[#done + 1] = entry
    repeats = repeats + 1
  elseif mine[entry] then
    mine[entry] = nil
    local id = ms_dash .. (seq + 1)
    local added = append(key, id, a, false)
    if added == false then
      added = append(key, id, a, true)
      if not failed(added) then
        redis.call('XSETID', key, id, 'ENTRIESADDED', 1, 'MAXDELETEDID', floor_id)
      end
    end
    -- A script is not rolled back: on an error, stop here with what is done so far
    -- published, acked and counted by the clock; this event and the rest stay pending.
    if failed(added) then
      failure = added.err .. ' (history key ' .. key .. ')'
      break
    end
    seq = seq + 1
    touched[key] = true
    local tail, place = ARGV[a + 1], ARGV[a + 2]
    local bytes = #between + #id + #tail + #place
    if pending_bytes > 0 and pending_bytes + bytes > max_bytes then flush() end
    local n = #parts
    parts[n + 1], parts[n + 2], parts[n + 3], parts[n + 4] =
      pending_bytes > 0 and between or open, id, tail, place
    pending_bytes = pending_bytes + bytes
    done[#done + 1] = entry
  end
  handled = handled + 1
end
flush()
-- Each history lives at least ttl after its last event (what gap() and the floor above
-- rely on) and at most ttl + ttl / 8: refreshed only when that much has passed, so a busy
-- room costs a PTTL per batch, not a write.
for key in pairs(touched) do
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl + math.floor(ttl / 8)) end
end
if #done > 0 then
  -- In slices: unpack() of thousands of values overflows Lua's stack.
  for j = 1, #done, 1000 do
    redis.call('XACK', stream, group, unpack(done, j, math.min(j + 999, #done)))
  end
end
if #done > repeats then  -- a position was given
  redis.call('HSET', clock, 'last', ms_dash .. seq, 'since', string.format('%.0f', since))
end
if repeats > 0 then redis.call('HINCRBY', clock, 'repeats', repeats) end
return {handled, #done - repeats, failure, repeats}
"""
"""KEYS: the shard's stream, its clock, then each event's history key. ARGV: group,
consumer, queue channel, PUBLISH or SPUBLISH, history size, history TTL in ms, the
lowest and highest entry id of the batch, the batch message's head and tail and its size
limit (``queue.batch_head``, ``BATCH_TAIL``, ``MAX_BATCH_BYTES``), what opens and closes
an item (``queue.ITEM_OPEN``, ``ITEM_CLOSE``), the guard (an entry id: publish nothing
while it is pending on this consumer; '' for none), the idempotency window in ms, then
four per event: its entry id, its item's text after the position (``queue.item_tail``),
which is also what its room's history keeps in the field ``i``, the item's end
(``queue.item_place``) and its idempotency key's name (``keys.idempotency``, in the
stream's slot; '' for none): an event whose key holds another entry's id is a repeat,
acked and counted in the clock's ``repeats`` but neither published nor kept. Each event
still pending on this consumer is given the next position, kept in its room's history,
published and acked, in order and atomically (an ack means "published"; nothing is
published twice). Returns how many events it handled (published, or skipped as not
pending: another bridge had claimed or published it), how many of them it published, an
error ('' for none) that stopped the batch at the next event, and how many repeats it
acked."""

READ = """
local position, count = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'last', 'since')
local out = {string.format('%.0f', now), state[1] or '', state[2] or ''}
for i = 2, #KEYS do
  local key = KEYS[i]
  if position == '' or redis.call('EXISTS', key) == 0 then
    out[#out + 1] = {0}
  else
    local x = redis.call('XINFO', 'STREAM', key)
    local info = {}
    for j = 1, #x, 2 do info[x[j]] = x[j + 1] end
    local first = info['first-entry'] and info['first-entry'][1] or ''
    local has = #redis.call('XRANGE', key, position, position)
    out[#out + 1] = {1, first, info['entries-added'], info['length'],
      info['max-deleted-entry-id'], has,
      redis.call('XRANGE', key, '(' .. position, '+', 'COUNT', count)}
  end
end
return out
"""
"""KEYS: a shard's clock, then the history keys of a client's rooms there. ARGV: the
client's position ('' for none), most entries read per room. Returns Redis's time, the
clock's last position and start, then per room what ``Snapshot`` holds."""


class Script:
    """A Lua script registered with its client on first use: a cluster client connects
    when first used, and every process must start while Redis is still down."""

    def __init__(self, client: Any, source: str) -> None:
        self.client = client
        self.source = source
        self._script: Any = None
        self._sha: str | None = None

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if self._script is None:
            self._script = self.client.register_script(self.source)
        return self._script(keys=keys, args=args)

    def command(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """A run as a command to send with others, by its SHA alone (no SCRIPT EXISTS
        round trip first): see ``unloaded`` for a Redis that lost it."""
        if self._sha is None:
            self._sha = self.client.script_load(self.source)
        return ("EVALSHA", self._sha, len(keys), *keys, *args)

    def unloaded(self, reply: Any) -> bool:
        """Whether ``reply`` says Redis no longer has the script (restarted, failed over,
        flushed): it is loaded again on the next ``command``."""
        if isinstance(reply, NoScriptError):
            self._sha = None
            return True
        return False


@dataclass
class Room:
    """One room's history as the read script saw it."""

    exists: bool
    first: StreamId | None = None
    added: int = 0
    length: int = 0
    complete_after: StreamId = ZERO  # max-deleted-entry-id: complete after this
    has_position: bool = False
    entries: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@dataclass
class Snapshot:
    """A shard's histories of one client's rooms, read in one atomic script."""

    now_ms: int
    last: StreamId  # the newest position the shard has given (ZERO: none yet)
    since_ms: int | None  # when the shard's clock started
    rooms: list[Room]

    @classmethod
    def parse(cls, reply: list[Any]) -> Snapshot:
        now, last, since, *rooms = reply
        return cls(
            int(now),
            StreamId.parse(last) if last else ZERO,
            int(since) if since else None,
            [_room(r) for r in rooms],
        )


def _room(reply: list[Any]) -> Room:
    if not int(reply[0]):
        return Room(False)
    _, first, added, length, max_deleted, has, rows = reply
    entries = [(str(i), field_dict(f)) for i, f in rows]
    return Room(
        True,
        StreamId.parse(first) if first else None,
        int(added),
        int(length),
        StreamId.parse(max_deleted),
        bool(int(has)),
        entries,
    )


def stored_event(position: str, fields: dict[str, str]) -> tuple[str, str, str | None, Any]:
    """``(entry id, channel, sender, body)`` of a history entry; ValueError (or
    KeyError) if it is malformed."""
    tail = fields.get("i")
    if tail is not None:
        _, entry_id, channel, sender, body = parsed_item(position, tail)
        return entry_id, channel, sender, body
    # The former format (see the module's docstring).
    return fields.get("e", ""), fields["c"], fields.get("f") or None, json.loads(fields["b"])


def gap(room: Room, after: StreamId, now_ms: int, since_ms: int | None, ttl_ms: int) -> str | None:
    """Why ``room``'s history may lack events after ``after``, or None if it has them all.

    Trimming and expiry remove the oldest events: an event at or before ``after`` still
    there proves the rest is. Otherwise the history must be complete after its floor."""
    if not room.exists:
        # Never had events, or expired: events it had are older than now - ttl (none at
        # all if the clock is younger than ttl).
        if since_ms is not None and now_ms - ttl_ms < since_ms:
            return None
        if after.ms >= now_ms - ttl_ms:
            return None
        return "history of a room expired"
    if room.first is None or room.first <= after:
        return None
    if room.added > room.length:
        return "history of a room was trimmed"
    if room.complete_after > after:
        return "history of a room expired"
    return None


def proves(rooms: list[Room]) -> bool:
    """Whether ``after`` is a position these histories still hold (continuity without
    an epoch: the client's own last event is still there)."""
    return any(r.has_position for r in rooms)
