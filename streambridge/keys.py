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
