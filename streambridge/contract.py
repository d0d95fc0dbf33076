"""The event contract: what an entry of the stream must hold.

This is the one place that says what a valid event is. Producers validate with
it before XADD, the bridge validates every entry it reads, the web app validates
``POST /api/`` with it.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from streambridge import defaults

CHANNEL_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
RESERVED_CHANNELS = frozenset(
    {
        # socket.io-client 4 refuses a packet with one of these names and reconnects;
        # python-socketio hands the first two to the server's own life-cycle handlers.
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
        "__disconnect_final",  # python-socketio's client
    }
)
RESERVED_PREFIX = "streambridge:"
"""streambridge's own server events (``streambridge:recovery``): no producer's."""
ROOM_MAX_CHARS = 256
FIELDS = ("channel", "body", "room", "namespace")
_FIELD_SET = frozenset(FIELDS)


class ContractError(ValueError):
    """An event or stream entry does not fit the contract; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; browsers would fail to parse the packet.
    raise ValueError(f"{name} is not valid JSON")


def check_json_text(text: str) -> None:
    """Raise ValueError unless ``text`` is one strict JSON value."""
    try:
        json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class Event(BaseModel):
    """One event: a Socket.IO event name, a JSON body, and where it goes."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strict=True)

    channel: str = Field(pattern=CHANNEL_PATTERN, description="Socket.IO event name.")
    body: str = Field(description="JSON text: object, array, string, number, ...")
    room: str | None = Field(
        None, min_length=1, max_length=ROOM_MAX_CHARS, description="Only this room; None: all."
    )
    namespace: str = Field(
        "/", min_length=1, max_length=ROOM_MAX_CHARS, pattern=r"^/", description="Namespace."
    )

    @field_validator("channel")
    @classmethod
    def _channel_is_not_reserved(cls, channel: str) -> str:
        if is_reserved(channel):
            raise ValueError(
                f"{channel!r} is reserved (Socket.IO's own event names and the "
                f"{RESERVED_PREFIX!r} prefix)"
            )
        return channel

    @field_validator("body")
    @classmethod
    def _body_is_bounded_json(cls, body: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_body_bytes", defaults.MAX_BODY_BYTES)
        if body.isascii():
            size = len(body)
        else:
            try:
                size = len(body.encode("utf-8"))
            except UnicodeEncodeError:
                raise ValueError("body is not valid UTF-8 text") from None
        if size > limit:
            raise ValueError(f"body is {size} bytes, more than the limit of {limit}")
        try:
            check_json_text(body)
        except ValueError as exc:
            raise ValueError(f"body is not valid JSON: {exc}") from None
        return body

    @classmethod
    def build(
        cls,
        channel: str,
        body: Any,
        room: str | None = None,
        namespace: str = "/",
        *,
        max_body_bytes: int = defaults.MAX_BODY_BYTES,
    ) -> Event:
        """An event from a Python value for the body (serialized here, once)."""
        try:
            text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ContractError(f"body cannot be serialized as JSON: {exc}") from None
        return cls.parse(
            {"channel": channel, "body": text, "room": room, "namespace": namespace},
            max_body_bytes=max_body_bytes,
        )

    @classmethod
    def parse(
        cls, data: Mapping[Any, Any], *, max_body_bytes: int = defaults.MAX_BODY_BYTES
    ) -> Event:
        """Validate a mapping (a stream entry's fields or a decoded request).

        Raises ContractError with a short, human-readable reason.
        """
        try:
            mapping = data if type(data) is dict else dict(data)
            return cls.model_validate(mapping, context={"max_body_bytes": max_body_bytes})
        except ValidationError as exc:
            raise ContractError(describe(exc)) from None

    @classmethod
    def from_entry(
        cls, fields: Mapping[Any, Any] | None, *, max_body_bytes: int = defaults.MAX_BODY_BYTES
    ) -> Event:
        """Validate the fields of a stream entry (str or bytes keys and values)."""
        if not fields:
            raise ContractError("entry has no fields")
        if type(fields) is dict and all(type(k) is str for k in fields):
            decoded = fields  # already text (decode_responses): the common, fast case
        else:
            decoded = _decode(fields)
        check_known_fields(decoded)
        return cls.parse(decoded, max_body_bytes=max_body_bytes)

    def to_fields(self) -> dict[str, str]:
        """The stream entry for this event (optional fields only when set)."""
        fields = {"channel": self.channel, "body": self.body}
        if self.room is not None:
            fields["room"] = self.room
        if self.namespace != "/":
            fields["namespace"] = self.namespace
        return fields

    def shard(self, count: int) -> int:
        """Which of ``count`` shard streams this event goes to (see ``shard_for``)."""
        return shard_for(self.room, count)

    def decoded_body(self) -> Any:
        return json.loads(self.body)


def is_reserved(channel: str) -> bool:
    """A name no event may have: Socket.IO's own, or one of streambridge's."""
    return channel in RESERVED_CHANNELS or channel.startswith(RESERVED_PREFIX)


def _decode(fields: Mapping[Any, Any]) -> dict[str, str]:
    decoded: dict[str, str] = {}
    for key, value in fields.items():
        try:
            name = key.decode("utf-8") if isinstance(key, bytes) else str(key)
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise ContractError(f"field {key!r} is not UTF-8") from None
        decoded[name] = text
    return decoded


def describe(exc: ValidationError) -> str:
    """One line per problem: ``field: message``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "string_pattern_mismatch" and where == "channel":
            message = "must be 1-64 characters of A-Z a-z 0-9 _ . : -"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def check_known_fields(fields: Mapping[str, Any]) -> None:
    """ContractError naming any field the contract does not have."""
    unknown = set(fields) - _FIELD_SET
    if unknown:
        raise ContractError(f"unknown field(s): {', '.join(sorted(unknown))}")


def shard_for(room: str | None, count: int) -> int:
    """The shard of an event for ``room``: CRC-32 (the zlib one, as in every language's
    standard library) of the room's UTF-8 bytes, modulo ``count``; no room is the empty
    string, shard 0. One room, one shard: a room's events keep their order."""
    return zlib.crc32((room or "").encode()) % count if count > 1 else 0
