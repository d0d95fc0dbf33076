"""The event contract: what an entry of the stream must hold.

This is the one place that says what a valid event is. Producers validate with
it before XADD, the bridge validates every entry it reads, the web app validates
``POST /api/`` with it.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
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
SENDER_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,128}$"
"""1-128 printable ASCII characters, no space (a UUID, a job id and attempt...)."""
FIELDS = ("channel", "body", "room", "namespace", "from", "idempotency_key")
MAX_BODY_DEPTH = 32
"""Arrays and objects nest at most this deep in a body: every JSON parser on the way
(the web server's, the browser's) must take it without running out of stack."""
MAX_NUMBER_CHARS = 64
"""A number in a body is at most this many characters and finite as a double
(python-engineio refuses integers over 100 digits; a browser cannot parse Infinity)."""
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
    """Raise ValueError unless ``text`` is one strict JSON value within the body rules
    (``MAX_BODY_DEPTH``, ``MAX_NUMBER_CHARS``)."""
    # The precise checks cost a Python call per number or container: only for texts
    # that could break a rule (a long digit run, a 3-digit exponent, many brackets).
    if _LONG_NUMBER_HINT.search(text) is not None:
        value = _decoded_json(_BOUNDED, text)
    else:
        # orjson (4x faster) accepts no text the strict decoder refuses; when it refuses
        # one (lone surrogate escapes, depth), the strict decoder gives the verdict.
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = _decoded_json(_STRICT, text)
    if text.count("[") + text.count("{") > MAX_BODY_DEPTH and _depth(value) > MAX_BODY_DEPTH:
        raise ValueError(f"nested more than {MAX_BODY_DEPTH} levels deep")


# A number over MAX_NUMBER_CHARS has a run of 20+ digits (at most three runs, four
# other characters); one that overflows a double has an exponent of 3+ digits. The
# lookbehinds after one leading class let the regex engine skip to candidates fast.
_LONG_NUMBER_HINT = re.compile(r"[0-9eE](?:(?<=[0-9])[0-9]{19}|(?<=[eE])[+-]?[0-9]{3})")


def _check_number_size(literal: str) -> None:
    if len(literal) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number has {len(literal)} characters, more than {MAX_NUMBER_CHARS}")


def _bounded_int(literal: str) -> int:
    _check_number_size(literal)
    return int(literal)


def _bounded_float(literal: str) -> float:
    _check_number_size(literal)
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal} is too large for a double")
    return value


# Made once: json.loads with hooks builds a decoder on every call.
_STRICT = json.JSONDecoder(parse_constant=_reject_constant)
_BOUNDED = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_bounded_int, parse_float=_bounded_float
)


def _decoded_json(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_BODY_DEPTH} levels deep") from None


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (stops counting past the limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack and deepest <= MAX_BODY_DEPTH:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class Event(BaseModel):
    """One event: a Socket.IO event name, a JSON body, and where it goes."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strict=True, populate_by_name=True)

    channel: str = Field(pattern=CHANNEL_PATTERN, description="Socket.IO event name.")
    body: str = Field(description="JSON text: object, array, string, number, ...")
    room: str | None = Field(
        None, min_length=1, max_length=ROOM_MAX_CHARS, description="Only this room; None: all."
    )
    namespace: str = Field(
        "/", min_length=1, max_length=ROOM_MAX_CHARS, pattern=r"^/", description="Namespace."
    )
    sender: str | None = Field(
        None,
        alias="from",
        pattern=SENDER_PATTERN,
        description="Who published it, when a user did (POST /api/); None: the system.",
    )
    idempotency_key: str | None = Field(
        None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retried publishes carry the same key: delivered once per room within "
        "STREAMBRIDGE_IDEMPOTENCY_WINDOW_S.",
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
        sender: str | None = None,
        idempotency_key: str | None = None,
        max_body_bytes: int = defaults.MAX_BODY_BYTES,
    ) -> Event:
        """An event from a Python value for the body (serialized here, once)."""
        try:
            text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ContractError(f"body cannot be serialized as JSON: {exc}") from None
        fields = {"channel": channel, "body": text, "room": room, "namespace": namespace}
        if sender is not None:
            fields["from"] = sender
        if idempotency_key is not None:
            fields["idempotency_key"] = idempotency_key
        return cls.parse(fields, max_body_bytes=max_body_bytes)

    @classmethod
    def parse(
        cls, data: Mapping[Any, Any], *, max_body_bytes: int = defaults.MAX_BODY_BYTES
    ) -> Event:
        """Validate a mapping (a stream entry's fields or a decoded request).

        Raises ContractError with a short, human-readable reason.
        """
        try:
            mapping = data if type(data) is dict else dict(data)
            # The validator itself (model_validate adds a Python call per event).
            validate = cls.__pydantic_validator__.validate_python
            return validate(mapping, context={"max_body_bytes": max_body_bytes})
        except ValidationError as exc:
            raise ContractError(describe(exc)) from None

    @classmethod
    def from_entry(
        cls, fields: Mapping[Any, Any] | None, *, max_body_bytes: int = defaults.MAX_BODY_BYTES
    ) -> Event:
        """Validate the fields of a stream entry (str or bytes keys and values)."""
        if not fields:
            raise ContractError("entry has no fields")
        if type(fields) is dict and _FIELD_SET.issuperset(fields):
            decoded = fields  # text names, all known (decode_responses): the common case
        else:
            decoded = _decode(fields)
            check_known_fields(decoded)
        for name, value in decoded.items():
            if isinstance(value, str) and not value.isascii() and not _is_utf8(value):
                raise ContractError(f"field {name} is not UTF-8")
        return cls.parse(decoded, max_body_bytes=max_body_bytes)

    def to_fields(self) -> dict[str, str]:
        """The stream entry for this event (optional fields only when set)."""
        fields = {"channel": self.channel, "body": self.body}
        if self.room is not None:
            fields["room"] = self.room
        if self.namespace != "/":
            fields["namespace"] = self.namespace
        if self.sender is not None:
            fields["from"] = self.sender
        if self.idempotency_key is not None:
            fields["idempotency_key"] = self.idempotency_key
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
        elif error["type"] == "string_pattern_mismatch" and where == "from":
            message = "must be 1-128 characters, none of them a control character"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def check_known_fields(fields: Mapping[str, Any]) -> None:
    """ContractError naming any field the contract does not have."""
    unknown = set(fields) - _FIELD_SET
    if unknown:
        raise ContractError(f"unknown field(s): {', '.join(sorted(map(shown, unknown)))}")


def room_error(room: Any) -> str | None:
    """Why ``room`` cannot name a room (None: it can), by the rules of ``Event.room``."""
    if type(room) is not str:
        return "room must be a string"
    if not 1 <= len(room) <= ROOM_MAX_CHARS:
        return f"room must be 1-{ROOM_MAX_CHARS} characters"
    if not _is_utf8(room):
        return "room is not UTF-8"
    return None


def shown(text: str, limit: int = 64) -> str:
    """Text from a stream entry as it may go into a reason or a log line: bytes that are
    not UTF-8 (read with surrogateescape) written as \\xNN, cut at ``limit``."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no bytes were read as
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")[:limit]


def _is_utf8(text: str) -> bool:
    """False for text read with surrogateescape from bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shard_for(room: str | None, count: int) -> int:
    """The shard of an event for ``room``: CRC-32 (the zlib one, as in every language's
    standard library) of the room's UTF-8 bytes, modulo ``count``; no room is the empty
    string, shard 0. One room, one shard: a room's events keep their order."""
    return zlib.crc32((room or "").encode()) % count if count > 1 else 0
