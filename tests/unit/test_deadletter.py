"""Dead-letter fields (streambridge/deadletter.py): what was written, plus why and where."""

from __future__ import annotations

import pytest

from streambridge.deadletter import (
    CONSUMER,
    META_FIELDS,
    ORIGINAL_ID,
    REASON,
    dead_fields,
    original_fields,
)


def test_dead_fields_keep_the_original_and_add_meta():
    fields = {"channel": "bad channel", "body": "1"}
    dead = dead_fields(fields, "1-0", "channel: bad", "c1")
    assert dead == {
        "channel": "bad channel",
        "body": "1",
        REASON: "channel: bad",
        ORIGINAL_ID: "1-0",
        CONSUMER: "c1",
    }
    assert original_fields(dead) == fields


def test_meta_field_names():
    assert META_FIELDS == ("reason", "original_id", "consumer")


def test_colliding_names_are_renamed_and_restored():
    fields = {"channel": "m", "reason": "mine", "original_id": "42", "consumer": "me"}
    dead = dead_fields(fields, "7-1", "unknown field(s): ...", "bridge-1")
    assert dead[REASON] == "unknown field(s): ..."
    assert dead[ORIGINAL_ID] == "7-1"
    assert dead[CONSUMER] == "bridge-1"
    assert dead["original:reason"] == "mine"
    assert dead["original:original_id"] == "42"
    assert dead["original:consumer"] == "me"
    assert original_fields(dead) == fields


def test_bytes_are_decoded_and_invalid_utf8_is_escaped_not_lost():
    dead = dead_fields({b"channel": b"m", b"body": b"\xff\xfe"}, "1-0", "why", "c")
    assert dead["channel"] == "m"
    assert dead["body"] == "\\xff\\xfe"


@pytest.mark.parametrize("fields", [None, {}])
def test_an_entry_without_fields_still_has_meta(fields):
    dead = dead_fields(fields, "1-0", "entry has no fields", "c")
    assert dead == {REASON: "entry has no fields", ORIGINAL_ID: "1-0", CONSUMER: "c"}
    assert original_fields(dead) == {}


def test_non_string_values_are_stringified():
    assert dead_fields({"n": 1}, "1-0", "r", "c")["n"] == "1"


@pytest.mark.parametrize(
    "fields",
    [
        {"original:channel": "x"},
        {"reason": "a", "original:reason": "b"},
        {"original:original:consumer": "x", "consumer": "y"},
    ],
)
def test_round_trip_holds_for_fields_that_look_renamed(fields):
    assert original_fields(dead_fields(fields, "1-0", "why", "c")) == fields
