"""Operator views and actions: ``streambridge status`` and ``streambridge dead``."""

from __future__ import annotations

from typing import Any

from streambridge.bridge.deadletter import CONSUMER, ORIGINAL_ID, REASON, original_fields, raw

from streambridge.redis_conn import as_cluster
from streambridge.settings import BridgeSettings


def status(client: Any, settings: BridgeSettings) -> dict[str, Any]:
    """Per stream (one, or each shard): length and ends, each group's lag and pending
    entries per consumer, and on a cluster the node that holds it."""
    if settings.shards == 1:
        return _stream_status(client, settings)
    return {"shards": [_stream_status(client, shard) for shard in settings.shard_settings()]}


def _stream_status(client: Any, settings: BridgeSettings) -> dict[str, Any]:
    kind = client.type(settings.stream)  # "none" when there is no such key
    out: dict[str, Any] = {
        "stream": settings.stream,
        "exists": kind != "none",
        "length": 0,
        "first_id": None,
        "last_id": None,
        "groups": [],
        "dead_letters": client.xlen(settings.dead_stream),  # 0 when there is none
        # Retried publishes acked without delivery (their idempotency key was taken).
        "repeats": int(client.hget(settings.history_clock_key, "repeats") or 0),
        "epoch": client.get(settings.epoch_key),
    }
    cluster = as_cluster(client)
    if cluster is not None:
        out["node"] = cluster.get_node_from_key(settings.stream).name
    if not out["exists"]:
        return out
    if kind != "stream":
        out["error"] = f"key holds a {kind}, not a stream"
        return out
    info = client.xinfo_stream(settings.stream)
    out["length"] = info["length"]
    out["first_id"] = info["first-entry"][0] if info.get("first-entry") else None
    out["last_id"] = info["last-generated-id"]
    for group in client.xinfo_groups(settings.stream):
        consumers = [
            {
                "name": c["name"],
                "pending": c["pending"],
                "idle_ms": c["idle"],
            }
            for c in client.xinfo_consumers(settings.stream, group["name"])
        ]
        out["groups"].append(
            {
                "name": group["name"],
                "pending": group["pending"],
                "last_delivered_id": group["last-delivered-id"],
                "lag": group.get("lag"),  # Redis >= 7.0
                "consumers": consumers,
            }
        )
    return out


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
        lines.append(
            f"group {group['name']}: lag {lag}, pending {group['pending']}, "
            f"last delivered {group['last_delivered_id']}"
        )
        if group["consumers"]:
            lines.append(f"  {'consumer':<32} {'pending':>8} {'idle':>10}")
            for c in group["consumers"]:
                lines.append(f"  {c['name']:<32} {c['pending']:>8} {c['idle_ms'] / 1000:>9.1f}s")
    return "\n".join(lines)


def dead_letters(client: Any, settings: BridgeSettings, count: int) -> list[dict]:
    """The oldest ``count`` dead letters of each shard."""
    return [
        letter
        for shard in settings.shard_settings()
        for letter in _dead_letters(client, shard, count)
    ]


def _dead_letters(client: Any, settings: BridgeSettings, count: int) -> list[dict]:
    entries = client.xrange(settings.dead_stream, "-", "+", count=count)
    return [
        {
            "id": dead_id,
            "stream": settings.stream,
            "original_id": fields.get(ORIGINAL_ID),
            "reason": fields.get(REASON),
            "consumer": fields.get(CONSUMER),
            "fields": original_fields(fields),
        }
        for dead_id, fields in entries
    ]


def requeue(client: Any, settings: BridgeSettings, ids: list[str] | None) -> list[tuple[str, str]]:
    """Append dead letters back to the stream they came from (as new entries) and
    delete them from the dead-letter stream, each in one transaction (the two keys
    share a cluster slot). ``ids=None``: all of them. Returns (dead id, new id) pairs."""
    shards = settings.shard_settings()
    if ids is None:
        work = [(shard, _all_dead(client, shard)) for shard in shards]
    else:
        # Each letter looked up once; all of them before anything is moved.
        found = [(shard, [_one(client, shard, i) for i in ids]) for shard in shards]
        present = {letter[0] for _, letters in found for letter in letters if letter}
        missing = [i for i in ids if i not in present]
        if missing:
            raise KeyError(missing[0])
        work = [(shard, [[letter for letter in letters if letter]]) for shard, letters in found]
    moved: list[tuple[str, str]] = []
    for shard, batches in work:
        moved.extend(_requeue(client, shard, batches))
    return moved


def _requeue(client: Any, settings: BridgeSettings, batches: Any) -> list[tuple[str, str]]:
    moved: list[tuple[str, str]] = []
    # MULTI needs both keys in one cluster slot: true of a shard (its hash tag covers
    # its dead letters), not of a single unsharded stream on a cluster.
    cluster = as_cluster(client)
    atomic = cluster is None or cluster.keyslot(settings.stream) == cluster.keyslot(
        settings.dead_stream
    )
    for batch in batches:
        for dead_id, fields in batch:
            pipe = client.pipeline(transaction=atomic)
            pipe.xadd(
                settings.stream,
                {raw(k): raw(v) for k, v in original_fields(fields).items()},
                maxlen=settings.maxlen,
                approximate=True,
            )
            pipe.xdel(settings.dead_stream, dead_id)
            new_id, _ = pipe.execute()
            moved.append((dead_id, new_id))
    return moved


def _one(client: Any, settings: BridgeSettings, dead_id: str) -> tuple[str, dict] | None:
    found = client.xrange(settings.dead_stream, dead_id, dead_id, count=1)
    return found[0] if found else None


def _all_dead(client: Any, settings: BridgeSettings):
    # Snapshot the end first, so entries dead-lettered again meanwhile are not looped on.
    last = client.xrevrange(settings.dead_stream, "+", "-", count=1)
    if not last:
        return
    end = last[0][0]
    while True:
        page = client.xrange(settings.dead_stream, "-", end, count=500)
        if not page:
            return
        yield page
