"""Redis key names derived from the stream key (one place for each)."""

from __future__ import annotations

import functools

from streambridge import defaults


def dead(stream: str) -> str:
    """Dead-letter stream."""
    return stream + defaults.DEAD_SUFFIX


def epoch(stream: str) -> str:
    """String key holding the stream's epoch: changes when stream or group is recreated."""
    return stream + ":epoch"


def alive(stream: str, group: str, consumer: str) -> str:
    """Liveness key a bridge refreshes with a TTL (read by ``bridge --check``)."""
    return f"{stream}:alive:{group}:{consumer}"


def shard(stream: str, index: int, count: int) -> str:
    """Stream key of shard ``index`` of ``count``: the hash tag keeps each shard's keys
    (dead letters, epoch, ...) in one cluster slot; one shard keeps the plain key."""
    return stream if count == 1 else f"{stream}:{{{index}}}"


def shards(stream: str, count: int) -> list[str]:
    return [shard(stream, i, count) for i in range(count)]


def _slot_tagged(stream: str) -> str:
    """``stream`` as a prefix whose keys share the stream's cluster slot: a shard key
    already has a hash tag; a plain key hashes as ``{stream}`` does."""
    return stream if "{" in stream else f"{{{stream}}}"


@functools.lru_cache(maxsize=8192)  # the bridge names one per event
def history(stream: str, namespace: str, room: str | None) -> str:
    """Per-room history of ``stream``'s events (``room`` None: the namespace's broadcast).
    The namespace's length comes first, so no namespace and room pair reads as another."""
    base = f"{_slot_tagged(stream)}:history:{len(namespace)}{namespace}"
    return base if room is None else f"{base}:{room}"


def idempotency(stream: str, namespace: str, room: str | None, sender: str | None, key: str) -> str:
    """The first entry id seen with an idempotency ``key`` from ``sender`` (None: the
    system) in a room: in the stream's slot, beside the room's history. Per sender, so one
    user's key never stands for another's event; lengths first, so no room, sender and
    key read as another."""
    where = "" if room is None else f"{len(room)}:{room}"
    who = "" if sender is None else f"{len(sender)}:{sender}"
    return f"{_slot_tagged(stream)}:idempotency:{len(namespace)}{namespace}:{where}:{who}:{key}"


def history_clock(stream: str) -> str:
    """Hash of the shard's publication clock: the last position given (``last``) and
    when the clock started (``since``)."""
    return f"{_slot_tagged(stream)}:history-clock"


def stream_channel(channel: str, stream: str) -> str:
    """With sharded pub/sub, the queue channel that carries ``stream``'s events: in the
    stream's slot, so the bridge's script can publish where it keeps the history."""
    return f"{channel}:{_slot_tagged(stream)}"


def presence(stream: str, namespace: str, room: str) -> tuple[str, str]:
    """A room's presence: its connections (sorted set, by expiry) and its users'
    connection counts (hash). One hash tag per room: the two share a cluster slot, and
    rooms spread over the cluster."""
    tag = f"{{{stream}:presence:{len(namespace)}{namespace}:{room}}}"
    return f"{tag}:connections", f"{tag}:users"


def dashboard_samples(stream: str) -> str:
    """Stream of the web servers' samples for the dashboard's charts (one for all shards)."""
    return f"{stream}:dashboard-samples"
