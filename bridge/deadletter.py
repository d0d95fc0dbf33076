"""Dead letters: entries that broke the contract or could not be delivered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REASON = "reason"
ORIGINAL_ID = "original_id"
CONSUMER = "consumer"
META_FIELDS = (REASON, ORIGINAL_ID, CONSUMER)
_RENAMED = "original:"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def dead_fields(
    fields: Mapping[Any, Any] | None, stream_id: str, reason: str, consumer: str
) -> dict[str, str]:
    """The original fields plus why and where; an original field that collides with
    a meta field is kept as ``original:<name>``."""
    out: dict[str, str] = {}
    for key, value in (fields or {}).items():
        name = _text(key)
        escape = name in META_FIELDS or name.startswith(_RENAMED)
        out[_RENAMED + name if escape else name] = _text(value)
    out[REASON] = reason
    out[ORIGINAL_ID] = stream_id
    out[CONSUMER] = consumer
    return out


def original_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """Undo ``dead_fields``: what the producer wrote."""
    out = {}
    for name, value in fields.items():
        if name in META_FIELDS:
            continue
        out[name[len(_RENAMED) :] if name.startswith(_RENAMED) else name] = value
    return out
