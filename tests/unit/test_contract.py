"""The event contract (streambridge/contract.py): what a valid event is, and why not."""

from __future__ import annotations

import json

import pytest

from streambridge import defaults
from streambridge.contract import ContractError, Event, check_json_text

# -- valid events ----------------------------------------------------------------------


def test_minimal_entry_is_valid_and_defaults_apply():
    event = Event.from_entry({"channel": "message", "body": '"hi"'})
    assert event.channel == "message"
    assert event.body == '"hi"'
    assert event.room is None
    assert event.namespace == "/"
    assert event.decoded_body() == "hi"


@pytest.mark.parametrize(
    "body",
    ['{"a": [1, 2.5, null, true]}', "[]", '"text"', "0", "-1.5e3", "null", "false", ' {"x":1} '],
)
def test_every_kind_of_json_value_is_a_valid_body(body):
    event = Event.parse({"channel": "message", "body": body})
    assert event.body == body  # kept verbatim, never re-serialized
    assert event.decoded_body() == json.loads(body)


def test_room_and_namespace_are_optional_and_kept():
    event = Event.parse({"channel": "m", "body": "1", "room": "user:alice", "namespace": "/admin"})
    assert (event.room, event.namespace) == ("user:alice", "/admin")


def test_build_serializes_python_values_compactly_without_ascii_escapes():
    event = Event.build("message", {"text": "héllo", "n": [1, 2]})
    assert event.body == '{"text":"héllo","n":[1,2]}'


def test_event_is_frozen():
    event = Event.build("m", 1)
    with pytest.raises(ValueError, match="frozen"):
        event.channel = "other"


# -- channel rules -----------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["a", "A-z_0.9:x", "x" * 64, "chat:room-1.v2"])
def test_channel_accepts_allowed_characters_up_to_64(channel):
    assert Event.build(channel, 1).channel == channel


@pytest.mark.parametrize(
    "channel",
    ["", "x" * 65, "has space", "slash/no", "é", "semi;colon", "message\n", "\nmessage", "a*"],
)
def test_channel_rejects_anything_else(channel):
    with pytest.raises(ContractError) as info:
        Event.build(channel, 1)
    assert info.value.reason == "channel: must be 1-64 characters of A-Z a-z 0-9 _ . : -"


def test_channel_must_be_a_string_not_a_number():
    with pytest.raises(ContractError, match=r"^channel: "):
        Event.parse({"channel": 123, "body": "1"})


# -- body: strict JSON -------------------------------------------------------------------


@pytest.mark.parametrize("body", ["NaN", "Infinity", "-Infinity", '{"x": NaN}', "[1, Infinity]"])
def test_body_rejects_non_standard_json_constants(body):
    with pytest.raises(ContractError) as info:
        Event.parse({"channel": "m", "body": body})
    assert info.value.reason.startswith("body: body is not valid JSON")


@pytest.mark.parametrize("body", ["", "hi", "{'a': 1}", '{"a": 1', "1 2", "[1,]", "undefined"])
def test_body_rejects_text_that_is_not_one_json_value(body):
    with pytest.raises(ContractError, match=r"^body: body is not valid JSON"):
        Event.parse({"channel": "m", "body": body})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1j}, object()])
def test_build_refuses_values_that_are_not_json(value):
    with pytest.raises(ContractError, match="body cannot be serialized as JSON"):
        Event.build("m", value)


def test_check_json_text_is_strict():
    check_json_text('{"a": [1, "x"]}')
    with pytest.raises(ValueError, match="NaN is not valid JSON"):
        check_json_text("NaN")


# -- body size ---------------------------------------------------------------------------


def _string_body(size: int) -> str:
    """A JSON string literal of exactly ``size`` UTF-8 bytes."""
    return '"' + "a" * (size - 2) + '"'


def test_default_limit_is_64_kib_inclusive():
    assert defaults.MAX_BODY_BYTES == 64 * 1024
    limit = defaults.MAX_BODY_BYTES
    assert len(Event.parse({"channel": "m", "body": _string_body(limit)}).body) == limit
    with pytest.raises(ContractError) as info:
        Event.parse({"channel": "m", "body": _string_body(limit + 1)})
    assert info.value.reason == f"body: body is {limit + 1} bytes, more than the limit of {limit}"


def test_limit_counts_utf8_bytes_not_characters():
    body = '"' + "é" * 5 + '"'  # 7 characters, 12 bytes
    Event.parse({"channel": "m", "body": body}, max_body_bytes=12)
    with pytest.raises(ContractError, match="body is 12 bytes, more than the limit of 11"):
        Event.parse({"channel": "m", "body": body}, max_body_bytes=11)


def test_limit_is_configurable_everywhere():
    body = _string_body(100)
    with pytest.raises(ContractError, match="limit of 99"):
        Event.build("m", "a" * 98, max_body_bytes=99)
    with pytest.raises(ContractError, match="limit of 99"):
        Event.from_entry({"channel": "m", "body": body}, max_body_bytes=99)
    assert Event.from_entry({"channel": "m", "body": body}, max_body_bytes=100).body == body
    # A larger limit than the default is honoured too.
    big = _string_body(defaults.MAX_BODY_BYTES + 10)
    assert Event.parse({"channel": "m", "body": big}, max_body_bytes=10**6).body == big


# -- room and namespace ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"room": ""}, "room"),
        ({"room": "r" * 257}, "room"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "admin"}, "namespace"),
        ({"namespace": "/" + "n" * 256}, "namespace"),
    ],
)
def test_room_and_namespace_are_bounded(data, field):
    with pytest.raises(ContractError, match=rf"^{field}: "):
        Event.parse({"channel": "m", "body": "1", **data})


def test_room_of_256_characters_is_allowed():
    assert Event.parse({"channel": "m", "body": "1", "room": "r" * 256}).room == "r" * 256


# -- stream entries ----------------------------------------------------------------------


def test_from_entry_rejects_unknown_fields_by_name():
    with pytest.raises(ContractError) as info:
        Event.from_entry({"channel": "m", "body": "1", "zeta": "x", "alpha": "y"})
    assert info.value.reason == "unknown field(s): alpha, zeta"


@pytest.mark.parametrize("fields", [None, {}])
def test_from_entry_rejects_an_empty_entry(fields):
    with pytest.raises(ContractError, match="entry has no fields"):
        Event.from_entry(fields)


def test_from_entry_accepts_bytes_keys_and_values():
    event = Event.from_entry(
        {b"channel": b"message", b"body": '"h\u00e9"'.encode(), b"room": b"user:bob"}
    )
    assert (event.channel, event.body, event.room) == ("message", '"h\u00e9"', "user:bob")


def test_from_entry_rejects_non_utf8_bytes_and_names_the_field():
    with pytest.raises(ContractError) as info:
        Event.from_entry({b"channel": b"m", b"body": b'"\xff\xfe"'})
    assert info.value.reason == "field b'body' is not UTF-8"


def test_parse_rejects_unknown_keys_too():
    with pytest.raises(ContractError, match=r"^extra: "):
        Event.parse({"channel": "m", "body": "1", "extra": "x"})


@pytest.mark.parametrize(
    "event",
    [
        Event.build("m", {"a": 1}),
        Event.build("m", "x", room="user:alice"),
        Event.build("m", [1], namespace="/chat"),
        Event.build("m", None, room="team:blue", namespace="/chat"),
    ],
)
def test_to_fields_round_trips_through_from_entry(event):
    fields = event.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert Event.from_entry(fields) == event
    # Byte form, as a client without decode_responses would read it.
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    assert Event.from_entry(raw) == event


def test_to_fields_omits_defaults():
    assert Event.build("m", 1).to_fields() == {"channel": "m", "body": "1"}
    assert Event.build("m", 1, room="r", namespace="/n").to_fields() == {
        "channel": "m",
        "body": "1",
        "room": "r",
        "namespace": "/n",
    }


# -- readable reasons --------------------------------------------------------------------


def test_missing_fields_are_reported_as_required():
    with pytest.raises(ContractError) as info:
        Event.from_entry({"room": "r"})
    assert info.value.reason == "channel: is required; body: is required"


def test_several_problems_are_reported_together_without_pydantic_noise():
    with pytest.raises(ContractError) as info:
        Event.parse({"channel": "bad channel", "body": "NaN"})
    reason = info.value.reason
    assert reason.startswith("channel: must be 1-64 characters")
    assert "; body: body is not valid JSON: NaN is not valid JSON" in reason
    assert "Value error" not in reason
    assert "https://" not in reason
    assert "\n" not in reason


def test_contract_error_is_a_value_error_with_reason():
    error = ContractError("why")
    assert isinstance(error, ValueError)
    assert (error.reason, str(error)) == ("why", "why")


def test_lone_surrogate_in_body_is_a_contract_error():
    # json.loads('"\\ud800"') yields a lone surrogate: what POST /api/ hands to build().
    value = json.loads('"\\ud800"')
    with pytest.raises(ContractError):
        Event.build("m", value)


DEEP = "[" * 30_000 + "]" * 30_000  # valid JSON, 60,000 bytes: under the 64 KiB limit


def test_deeply_nested_body_is_a_contract_error():
    with pytest.raises(ContractError, match=r"^body: "):
        Event.from_entry({"channel": "m", "body": DEEP})


# -- reserved names, the sender, and what a web server can deliver -----------------------


@pytest.mark.parametrize(
    "channel",
    ["connect", "disconnect", "connect_error", "newListener", "removeListener",
     "disconnecting", "__disconnect_final", "streambridge:recovery", "streambridge:x"],
)  # fmt: skip
def test_reserved_channels_are_invalid(channel):
    with pytest.raises(ContractError, match="is reserved"):
        Event.parse({"channel": channel, "body": "1"})


@pytest.mark.parametrize("channel", ["Connect", "disconnected", "my:connect", "streambridge"])
def test_names_that_only_look_reserved_are_fine(channel):
    assert Event.parse({"channel": channel, "body": "1"}).channel == channel


def test_from_names_the_sender_and_is_bounded():
    event = Event.parse({"channel": "m", "body": "1", "from": "alice"})
    assert event.sender == "alice"
    assert event.to_fields() == {"channel": "m", "body": "1", "from": "alice"}
    for bad in ("", "a" * 129, "bob\nadmin", "x\x00"):
        with pytest.raises(ContractError, match="from: must be 1-128 characters"):
            Event.parse({"channel": "m", "body": "1", "from": bad})


@pytest.mark.parametrize(
    "body",
    ["[" * 33 + "]" * 33, '{"a":' * 33 + "1" + "}" * 33, "[" * 2000 + "]" * 2000,
     "1" * 65, "-" + "1" * 64, "1." + "0" * 63, "1e309", "-1e400", "[1e999]"],
)  # fmt: skip
def test_bodies_a_web_server_or_browser_could_not_take_are_invalid(body):
    with pytest.raises(ValueError):
        check_json_text(body)
    with pytest.raises(ContractError, match="body"):
        Event.parse({"channel": "m", "body": body})


@pytest.mark.parametrize(
    "body",
    ["[" * 32 + "]" * 32, "[" * 31 + "{}" + "]" * 31, "1" * 64, "1e308", "1e-999",
     json.dumps(["[[[["] * 40), '"' + "9" * 5000 + '"', json.dumps([[1]] * 100)],
)  # fmt: skip
def test_bodies_within_the_rules_are_valid(body):
    check_json_text(body)  # brackets in strings count for nothing


def test_unknown_field_names_that_are_not_utf8_are_named_readably():
    with pytest.raises(ContractError) as info:
        Event.from_entry({"k\udcff": "x", "channel": "m", "body": "1"})
    assert info.value.reason == "unknown field(s): k\\xff"
    info.value.reason.encode("utf-8")  # safe to write anywhere
