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


def raw(value: str) -> str | bytes:
    # Text read with surrogateescape (not UTF-8) goes back as the original bytes.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")
    return value


def dead_fields(
    fields: Mapping[Any, Any] | None, stream_id: str, reason: str, consumer: str
) -> dict[str | bytes, str | bytes]:
    """The original fields plus why and where; an original field that collides with
    a meta field is kept as ``original:<name>``."""
    out: dict[str | bytes, str | bytes] = {}
    for key, value in (fields or {}).items():
        name = _text(key)
        escape = name in META_FIELDS or name.startswith(_RENAMED)
        out[raw(_RENAMED + name if escape else name)] = raw(_text(value))
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
