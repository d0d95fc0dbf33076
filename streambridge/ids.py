"""Stream ids (``<ms>-<seq>``) as comparable values."""

from __future__ import annotations

import re
from typing import NamedTuple

_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_MAX = 2**64 - 1


class StreamId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, text: object) -> StreamId:
        """Parse ``"1700000000000-0"`` (or ``"1700000000000"``); ValueError otherwise."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        if not isinstance(text, str):
            raise ValueError("stream id must be a string")
        match = _ID.match(text)
        if not match:
            raise ValueError(f"not a stream id: {text[:40]!r}")
        ms, seq = int(match.group(1)), int(match.group(2) or 0)
        if ms > _MAX or seq > _MAX:
            raise ValueError("stream id out of range")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO = StreamId(0, 0)
