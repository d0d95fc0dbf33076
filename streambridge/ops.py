"""Operator views and actions: ``streambridge status``, ``streambridge dead`` and the
dashboard."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterable
from typing import Any

from streambridge import defaults, keys
from streambridge.deadletter import CONSUMER, ORIGINAL_ID, REASON, original_fields, raw
from streambridge.ids import StreamId
from streambridge.redis_conn import as_cluster
from streambridge.settings import CommonSettings

log = logging.getLogger(__name__)

# A live bridge whose last read brought entries longer ago than this is idle (before
# Redis 7.2 a read that brings nothing does not reset a consumer's idle time).
BUSY_WITHIN_MS = 10_000


def status(client: Any, settings: CommonSettings) -> dict[str, Any]:
    """Per stream (one, or each shard): length and ends, each group's lag and pending
    entries per consumer, and on a cluster the node that holds it."""
    if settings.shards == 1:
        return _stream_status(client, settings)
    return {"shards": [_stream_status(client, shard) for shard in settings.shard_settings()]}


def _stream_status(client: Any, settings: CommonSettings) -> dict[str, Any]:
    # Three round trips per stream, whatever its groups and consumers.
    pipe = client.pipeline(transaction=False)
    pipe.type(settings.stream)  # "none" when there is no such key
    pipe.xlen(settings.dead_stream)  # 0 when there is none
    pipe.hget(settings.history_clock_key, "repeats")
    pipe.get(settings.epoch_key)
    pipe.xinfo_stream(settings.stream)
    pipe.xinfo_groups(settings.stream)
    kind, dead, repeats, epoch, info, groups = pipe.execute(raise_on_error=False)
    for reply in (kind, dead, repeats, epoch):
        if isinstance(reply, Exception):
            raise reply
    out: dict[str, Any] = {
        "stream": settings.stream,
        "exists": kind != "none",
        "length": 0,
        "first_id": None,
        "last_id": None,
        "groups": [],
        "dead_letters": dead,
        # Retried publishes acked without delivery (their idempotency key was taken).
        "repeats": int(repeats or 0),
        "epoch": epoch,
    }
    cluster = as_cluster(client)
    if cluster is not None:
        out["node"] = cluster.get_node_from_key(settings.stream).name
    if not out["exists"]:
        return out
    if kind != "stream":
        out["error"] = f"key holds a {kind}, not a stream"
        return out
    for reply in (info, groups):
        if isinstance(reply, Exception):
            raise reply  # the stream went away in between: as Redis said
    out["length"] = info["length"]
    out["first_id"] = info["first-entry"][0] if info.get("first-entry") else None
    out["last_id"] = info["last-generated-id"]
    out["entries_added"] = info.get("entries-added")  # Redis >= 7.0
    pipe = client.pipeline(transaction=False)
    for group in groups:
        pipe.xinfo_consumers(settings.stream, group["name"])
        pipe.xpending(settings.stream, group["name"])
    replies = pipe.execute()
    consumers_of = replies[::2]
    pipe = client.pipeline(transaction=False)
    for group, consumers in zip(groups, consumers_of, strict=True):
        for c in consumers:
            pipe.pttl(keys.alive(settings.stream, group["name"], c["name"]))  # < 0: no key
    ttls = iter(pipe.execute())
    now_ms = _redis_time_ms(client) if any(g["pending"] for g in groups) else 0
    for group, consumers, summary in zip(groups, consumers_of, replies[1::2], strict=True):
        oldest = None
        if group["pending"] and summary.get("min"):
            # Since it was appended: how long the oldest undelivered event has waited.
            oldest = max(0, now_ms - StreamId.parse(summary["min"]).ms) / 1000
        out["groups"].append(
            {
                "name": group["name"],
                "pending": group["pending"],
                "last_delivered_id": group["last-delivered-id"],
                "lag": group.get("lag"),  # Redis >= 7.0
                "oldest_pending_age_s": oldest,
                "consumers": [_consumer(c, next(ttls)) for c in consumers],
            }
        )
    return out


def _consumer(info: dict, ttl_ms: int) -> dict[str, Any]:
    """A consumer of the group (a bridge): ``alive`` while it refreshes its liveness key
    (every second; ``ttl_ms`` is the key's, < 0 without one) and has read entries within
    ``BUSY_WITHIN_MS``, ``idle`` when it refreshes the key with nothing to read, ``gone``
    once the key has expired (stopped or dead; the others claim its pending entries).
    ``last_seen_s``: since its last refresh, or, once gone, since it last read."""
    if ttl_ms < 0:
        state, seen_ms = "gone", info["idle"]
    else:
        state = "alive" if info["idle"] <= BUSY_WITHIN_MS else "idle"
        seen_ms = max(0, defaults.BRIDGE_ALIVE_TTL_S * 1000 - ttl_ms)
    return {
        "name": info["name"],
        "pending": info["pending"],
        "idle_ms": info["idle"],
        "state": state,
        "last_seen_s": seen_ms / 1000,
    }


def _redis_time_ms(client: Any) -> int:
    # Redis's clock, the one stream ids are made from.
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def format_status(data: dict[str, Any]) -> str:
    if "shards" in data:
        return "\n\n".join(format_status(shard) for shard in data["shards"])
    lines = [
        f"stream        {data['stream']}" + ("" if data["exists"] else " (does not exist)"),
        f"length        {data['length']}",
        f"first id      {data['first_id'] or '-'}",
        f"last id       {data['last_id'] or '-'}",
        f"epoch         {data['epoch'] or '-'}",
        f"dead letters  {data['dead_letters']}",
        f"repeats       {data.get('repeats', 0)} (retried publishes delivered once)",
    ]
    if data.get("node"):
        lines.append(f"node          {data['node']}")
    if data.get("error"):
        lines.append(f"error         {data['error']}")
    for group in data["groups"]:
        lag = "?" if group["lag"] is None else group["lag"]
        lines.append("")
        oldest = group.get("oldest_pending_age_s")
        lines.append(
            f"group {group['name']}: lag {lag}, pending {group['pending']}, "
            f"last delivered {group['last_delivered_id']}"
            + ("" if oldest is None else f", oldest pending {oldest:.1f}s old")
        )
        if group["consumers"]:
            lines.append(f"  {'consumer':<32} {'pending':>8} {'idle':>10}  state, last seen")
            for c in group["consumers"]:
                lines.append(
                    f"  {c['name']:<32} {c['pending']:>8} {c['idle_ms'] / 1000:>9.1f}s"
                    f"  {c['state']}, {c['last_seen_s']:.1f}s ago"
                )
    return "\n".join(lines)


# Dead letters as a page shows them: each field's value cut to ``preview`` bytes in
# Redis, so a letter with a huge body never crosses the network whole. Returns, per
# entry: id, then name, value, full size, ... .
PREVIEW = """
local out = {}
local limit = tonumber(ARGV[4])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
for _, entry in ipairs(entries) do
  local row = {entry[1]}
  local fields = entry[2]
  for i = 1, #fields, 2 do
    row[#row + 1] = string.sub(fields[i], 1, limit)
    row[#row + 1] = string.sub(fields[i + 1], 1, limit)
    row[#row + 1] = #fields[i + 1]
  end
  out[#out + 1] = row
end
return out
"""


def dead_letters(
    client: Any, settings: CommonSettings, count: int, preview: int | None = None
) -> list[dict]:
    """The oldest ``count`` dead letters of each shard. ``preview``: each field cut to
    that many bytes (``truncated`` then gives the full sizes of those cut)."""
    letters = []
    for shard in settings.shard_settings():
        if preview is None:
            for dead_id, fields in client.xrange(shard.dead_stream, "-", "+", count=count):
                letters.append(_letter(shard.stream, dead_id, fields))
            continue
        script = client.register_script(PREVIEW)
        start, left = "-", count
        while left > 0:
            batch = min(left, PREVIEW_BATCH)
            rows = script(keys=[shard.dead_stream], args=[start, "+", batch, preview])
            letters.extend(_previewed(shard.stream, row, preview) for row in rows)
            if len(rows) < batch:
                break
            left -= len(rows)
            start = "(" + _text(rows[-1][0])  # after the last one read
    return letters


def _previewed(stream: str, row: list, limit: int) -> dict[str, Any]:
    dead_id, flat = _text(row[0]), row[1:]
    fields, truncated = {}, {}
    for i in range(0, len(flat), 3):
        name, value, size = _text(flat[i]), flat[i + 1], int(flat[i + 2])
        if len(name.encode("utf-8", "surrogateescape")) >= limit:
            name = _cut(name)  # perhaps cut by the script too
        while name in fields:  # two long names cut to the same start: both kept
            name += "~"
        if size > limit:
            value = _cut(value)
            truncated[_original_name(name)] = size
        fields[name] = _text(value)
    letter = _letter(stream, dead_id, fields)
    letter["truncated"] = truncated  # by the names shown: fields, or reason, ...
    return letter


def _cut(value: Any) -> str:
    """Text of bytes cut at a limit: a character cut in two at the end goes; bytes that
    are not UTF-8 elsewhere stay (as surrogate escapes)."""
    data = value if isinstance(value, bytes) else _text(value).encode("utf-8", "surrogateescape")
    return codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(data, final=False)


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _original_name(name: str) -> str:
    """A dead letter's field name as shown: the producer's, or a meta field's."""
    return next(iter(original_fields({name: ""})), name)


def dead_letter_count(client: Any, settings: CommonSettings) -> int:
    return sum(client.xlen(shard.dead_stream) for shard in settings.shard_settings())


def newest_dead(client: Any, settings: CommonSettings) -> dict[str, str]:
    """Per shard stream with dead letters: the id of its newest (``through`` for
    ``requeue`` and ``delete_dead``: what a page showed)."""
    out = {}
    for shard in settings.shard_settings():
        last = client.xrevrange(shard.dead_stream, "+", "-", count=1)
        if last:
            out[shard.stream] = last[0][0]
    return out


def dead_letter(
    client: Any, settings: CommonSettings, stream: str, dead_id: str, preview: int | None = None
) -> dict | None:
    """One dead letter of ``stream`` (a shard's stream key), or None."""
    shard = _shard(settings, stream)
    if preview is None:
        found = _one(client, shard, dead_id)
        return None if found is None else _letter(stream, *found)
    rows = client.register_script(PREVIEW)(
        keys=[shard.dead_stream], args=[dead_id, dead_id, 1, preview]
    )
    return _previewed(stream, rows[0], preview) if rows else None


def _letter(stream: str, dead_id: str, fields: dict) -> dict[str, Any]:
    return {
        "id": dead_id,
        "stream": stream,
        "original_id": fields.get(ORIGINAL_ID),
        "reason": fields.get(REASON),
        "consumer": fields.get(CONSUMER),
        "fields": original_fields(fields),
    }


def _shard(settings: CommonSettings, stream: str) -> CommonSettings:
    for shard in settings.shard_settings():
        if shard.stream == stream:
            return shard
    raise ValueError(f"no stream {stream!r} here")


def _scope(settings: CommonSettings, stream: str | None) -> list[CommonSettings]:
    return settings.shard_settings() if stream is None else [_shard(settings, stream)]


def _found(
    client: Any, shards: list[CommonSettings], ids: list[str]
) -> list[tuple[CommonSettings, list[tuple[str, dict]]]]:
    """Each letter looked up once, all of them before anything is changed; KeyError
    names the first id that is nowhere."""
    found = [(shard, [_one(client, shard, i) for i in ids]) for shard in shards]
    present = {letter[0] for _, letters in found for letter in letters if letter}
    missing = [i for i in ids if i not in present]
    if missing:
        raise KeyError(missing[0])
    return [(shard, [letter for letter in letters if letter]) for shard, letters in found]


# Requeue one letter only if it is still there: two operators (or a retried request)
# never put it back twice. The writes come last: a failing XADD (a key of another type)
# changes nothing, so the letter is never lost.
REQUEUE = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""
# Lua passes at most about 8,000 values to a command: a letter with more fields than
# this (it broke the contract anyway) is left where it is.
MAX_REQUEUE_FIELDS = 3_000
PREVIEW_BATCH = 5  # letters per preview script: Redis is never held long by one


def requeue(
    client: Any,
    settings: CommonSettings,
    ids: list[str] | None,
    stream: str | None = None,
    through: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Append dead letters back to the stream they came from (as new entries) and
    delete them from the dead-letter stream, each atomically and only if it is still
    there (a letter requeued by someone else meanwhile is skipped). ``ids=None``: all of
    them (``through``: per stream, only up to that id; a stream not in it is left);
    ``stream``: only that shard's. Returns (dead id, new id) pairs."""
    moved: list[tuple[str, str]] = []
    for shard, letters in _selected(client, settings, ids, stream, through):
        moved.extend(_requeue(client, shard, letters))
    return moved


def delete_dead(
    client: Any,
    settings: CommonSettings,
    ids: list[str] | None,
    stream: str | None = None,
    through: dict[str, str] | None = None,
) -> int:
    """Delete dead letters for good (``ids=None``: all of those there now, or up to
    ``through`` as for ``requeue``; letters dead-lettered meanwhile stay). Returns how
    many were deleted."""
    deleted = 0
    for shard, letters in _selected(client, settings, ids, stream, through):
        if letters:
            deleted += client.xdel(shard.dead_stream, *[dead_id for dead_id, _ in letters])
    return deleted


def _selected(
    client: Any,
    settings: CommonSettings,
    ids: list[str] | None,
    stream: str | None,
    through: dict[str, str] | None,
) -> Iterable[tuple[CommonSettings, list[tuple[str, dict]]]]:
    """(shard, letters) to act on: the named ones (all looked up first; KeyError for
    one that is nowhere), or every one, a page at a time, each page read after the one
    before was dealt with."""
    shards = _scope(settings, stream)
    if ids is not None:
        return _found(client, shards, ids)
    return ((shard, page) for shard in shards for page in _all_dead(client, shard, through))


def _requeue(
    client: Any, settings: CommonSettings, letters: list[tuple[str, dict]]
) -> list[tuple[str, str]]:
    moved: list[tuple[str, str]] = []
    # One script needs both keys in one cluster slot: true of a shard (its hash tag
    # covers its dead letters), not of a single unsharded stream on a cluster, where
    # the letter is deleted first and appended only if that deleted it.
    cluster = as_cluster(client)
    atomic = cluster is None or cluster.keyslot(settings.stream) == cluster.keyslot(
        settings.dead_stream
    )
    script = client.register_script(REQUEUE) if atomic else None
    for dead_id, fields in letters:
        original = original_fields(fields)
        if len(original) > MAX_REQUEUE_FIELDS:
            log.warning(
                "dead.requeue_skipped",
                extra={"id": dead_id, "fields": len(original), "why": "too many fields"},
            )
            continue
        flat = [raw(x) for pair in original.items() for x in pair]
        if script is not None:
            new_id = script(
                keys=[settings.dead_stream, settings.stream],
                args=[dead_id, settings.maxlen, *flat],
            )
        else:
            new_id = _requeue_in_two_steps(client, settings, dead_id, fields, flat)
        if new_id:
            moved.append((dead_id, _text(new_id)))
    return moved


def _requeue_in_two_steps(
    client: Any, settings: CommonSettings, dead_id: str, fields: dict, flat: list
) -> Any:
    """Where the two keys are in different cluster slots: delete first (only one
    requeue can), then append; if the append fails, the letter goes back."""
    if not client.xdel(settings.dead_stream, dead_id):
        return None
    try:
        return client.xadd(
            settings.stream,
            dict(zip(flat[::2], flat[1::2], strict=True)),
            maxlen=settings.maxlen,
            approximate=True,
        )
    except Exception:
        client.xadd(settings.dead_stream, {raw(k): raw(v) for k, v in fields.items()})
        raise


def _one(client: Any, settings: CommonSettings, dead_id: str) -> tuple[str, dict] | None:
    found = client.xrange(settings.dead_stream, dead_id, dead_id, count=1)
    return found[0] if found else None


def _all_dead(client: Any, settings: CommonSettings, through: dict[str, str] | None = None):
    """Pages of the dead letters there now (up to ``through[stream]`` if given), each
    read after the one before was dealt with (requeued or deleted)."""
    if through is not None:
        end = through.get(settings.stream)
        if end is None:
            return  # nothing of this stream was seen
    else:
        # Snapshot the end first, so entries dead-lettered again meanwhile are not
        # looped on.
        last = client.xrevrange(settings.dead_stream, "+", "-", count=1)
        if not last:
            return
        end = last[0][0]
    start = "-"
    while True:
        page = client.xrange(settings.dead_stream, start, end, count=500)
        if not page:
            return
        yield page
        # After this page, whatever became of it: a letter left there (one that cannot
        # be requeued) is not read again.
        start = "(" + page[-1][0]
