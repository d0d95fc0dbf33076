"""Redis key names derived from the stream key (one place for each)."""

from __future__ import annotations

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
