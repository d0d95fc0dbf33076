"""Initial state for a page: the newest events of a room, read from its history (the
one the bridge keeps for catch-up), newest first, paged by position."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from streambridge import history, keys, queue
from streambridge.contract import shard_for
from streambridge.settings import CommonSettings

POSITION = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)
MAX_PART = 2**64 - 1  # each part of a stream id


def recent(
    client: Any,
    shards: Sequence[CommonSettings],
    room: str | None,
    *,
    limit: int,
    before: str | None = None,
    namespace: str = "/",
) -> dict[str, Any]:
    """Up to ``limit`` events of ``room`` (None: the broadcast) older than the position
    ``before`` (None: the newest), each ``{"channel", "body", "meta"}`` with the meta a
    live event has; ``next``: the ``before`` of the next page (None: no more). The
    caller checks who may read the room and bounds ``limit``; ``shards``: each shard's
    settings (``CatchUp.shards``)."""
    if before is not None and not (
        POSITION.fullmatch(before) and all(int(p) <= MAX_PART for p in before.split("-"))
    ):
        raise ValueError("before: a position (meta.id), e.g. 1733412345123-0")
    shard = shard_for(room, len(shards))
    stream = shards[shard].stream
    pipe = client.pipeline(transaction=False)
    pipe.xrevrange(
        keys.history(stream, namespace, room),
        max=f"({before}" if before else "+",
        min="-",
        count=limit,
    )
    pipe.get(shards[shard].epoch_key)
    entries, epoch = pipe.execute()
    events = []
    named = shard if len(shards) > 1 else None  # meta names the shard only when sharded
    for position, fields in entries:
        try:
            entry_id, channel, sender, body = history.stored_event(position, fields)
        except (ValueError, KeyError):
            continue  # a malformed entry is skipped, as a replay does
        meta = queue.marked_meta(position, entry_id, epoch or "", named, sender)
        events.append({"channel": channel, "body": body, "meta": meta})
    more = len(entries) == limit
    return {"room": room, "events": events, "next": entries[-1][0] if more else None}
