"""streambridge/queue.py: the emit message the bridge publishes for python-socketio."""

from __future__ import annotations

import json

import pytest
import socketio

from streambridge.contract import Event
from streambridge.queue import (
    BATCH_METHOD,
    BRIDGE_HOST_ID,
    META_MARKER,
    batch_item,
    batch_message,
    emit_message,
    meta,
    meta_json,
    unbatched,
)


def test_message_has_the_pubsub_manager_emit_shape():
    event = Event.build("message", {"text": "hi"}, room="user:alice", namespace="/chat")
    message = json.loads(emit_message(event, "1700000000000-0", "1699999999999-0", "epoch1"))
    assert message == {
        "method": "emit",
        "event": "message",
        "data": [
            {"text": "hi"},
            {
                "id": "1700000000000-0",
                "entry": "1699999999999-0",
                "epoch": "epoch1",
                META_MARKER: 1,
            },
        ],
        "binary": False,
        "namespace": "/chat",
        "room": "user:alice",
        "skip_sid": None,
        "callback": None,
        "host_id": BRIDGE_HOST_ID,
    }


def test_broadcast_has_null_room_and_default_namespace():
    message = json.loads(emit_message(Event.build("m", 1), "1-0", "0-1", "e"))
    assert message["room"] is None
    assert message["namespace"] == "/"


def test_same_keys_as_python_socketio_itself_sends():
    """python-socketio's own PubSubManager.emit: the keys it publishes."""
    published = []

    class Recorder(socketio.PubSubManager):
        def _publish(self, data):
            published.append(data)

        def _handle_emit(self, message):  # no server to deliver to here
            pass

    Recorder(channel="x", write_only=True).emit("message", ("body", {"id": "1-0"}))
    [theirs] = published
    ours = json.loads(emit_message(Event.build("message", "body"), "1-0", "0-1", "e"))
    assert set(ours) == set(theirs)
    assert ours["data"][0] == theirs["data"][0]
    assert ours["host_id"] != theirs["host_id"]  # never mistaken for a web server's own


@pytest.mark.parametrize(
    "body",
    [
        '{"b": 1,   "a": [1.50, 2e3]}',  # spacing, key order and number spelling kept
        '"h\u00e9llo \\u00e9 \\"quoted\\""',
        "[]",
        "null",
        "12345678901234567890123",
        '  {"x": "</script>"}  ',
    ],
)
def test_body_is_spliced_in_verbatim(body):
    event = Event.parse({"channel": "c", "body": body})
    text = emit_message(event, "5-1", "4-0", "ep")
    assert '"data":[' + body + "," in text
    message = json.loads(text)
    assert message["data"][0] == json.loads(body)
    assert message["data"][1]["id"] == "5-1"
    item = batch_item(event, "5-1", "4-0")
    assert item.endswith("," + body + ',"/",null]')
    [unbatched_message] = unbatched(json.loads(batch_message([item], "ep")))
    assert unbatched_message == message


@pytest.mark.parametrize(
    ("room", "namespace"),
    [('user:"quoted"', "/"), ("r\\back", "/n\u00e9"), ("line\nbreak", "/x")],
)
def test_room_and_namespace_are_escaped(room, namespace):
    event = Event.parse({"channel": "c", "body": "1", "room": room, "namespace": namespace})
    message = json.loads(emit_message(event, "1-0", "0-1", "e"))
    assert (message["room"], message["namespace"]) == (room, namespace)
    [item] = unbatched(json.loads(batch_message([batch_item(event, "1-0", "0-1")], "e")))
    assert (item["room"], item["namespace"]) == (room, namespace)


def test_meta_json_is_compact_json():
    assert (
        meta_json("2-0", "1-0", "ep") == '{"id":"2-0","entry":"1-0","epoch":"ep","streambridge":1}'
    )


def test_message_is_what_a_manager_delivers_as_two_arguments(monkeypatch):
    """Fed to python-socketio's _handle_emit, the browser gets (body, meta)."""
    delivered = []

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None):
        delivered.append((event, data, namespace, room, skip_sid, callback))

    # Manager.emit is the local delivery that PubSubManager._handle_emit hands over to.
    monkeypatch.setattr(socketio.Manager, "emit", emit)
    manager = socketio.PubSubManager(channel="x", write_only=True)
    event = Event.build("message", {"n": 1}, room="user:bob")
    manager._handle_emit(json.loads(emit_message(event, "9-9", "8-0", "ep")))
    [(name, data, namespace, room, skip_sid, callback)] = delivered
    assert name == "message"
    assert data == ({"n": 1}, {"id": "9-9", "entry": "8-0", "epoch": "ep", META_MARKER: 1})
    assert (namespace, room, skip_sid, callback) == ("/", "user:bob", None, None)


@pytest.mark.parametrize("shard", [None, 3])
@pytest.mark.parametrize("sender", [None, "alice"])
def test_the_meta_written_by_the_bridge_and_by_catch_up_agree(shard, sender):
    written = json.loads(meta_json("2-0", "1-0", "ep", shard, sender))
    assert written.pop(META_MARKER) == 1  # only the queue message carries the marker
    assert written == meta("2-0", "1-0", "ep", shard, sender)


@pytest.mark.parametrize("shard", [None, 0, 3])
@pytest.mark.parametrize("sender", [None, 'al"ice'])
def test_each_batch_item_is_unbatched_into_its_emit_message_in_order(shard, sender):
    events = [
        Event.build("m", {"n": 1}, sender=sender),
        Event.build("chat", "hi", room="user:bob", namespace="/x", sender=sender),
        Event.build("m", [1, 2], room='r"1', sender=sender),
    ]
    positions = [("1-0", "0-1"), ("1-1", "0-2"), ("2-0", "0-3")]
    items = [batch_item(e, p, i) for e, (p, i) in zip(events, positions, strict=True)]
    text = batch_message(items, "ep", shard)
    expected = [
        json.loads(emit_message(e, p, i, "ep", shard))
        for e, (p, i) in zip(events, positions, strict=True)
    ]
    assert unbatched(json.loads(text)) == expected
    assert json.loads(text)["host_id"] == BRIDGE_HOST_ID


def test_a_single_emit_is_passed_on_as_it_is():
    first = json.loads(emit_message(Event.build("m", 1), "1-0", "0-1", "e"))
    assert unbatched(first) == [first]  # as python-socketio's own servers send it


@pytest.mark.parametrize(
    "bad_item",
    [7, "x", None, {"id": "1-0"}, [], ["1-0", "0-1", "m", None, 1, "/"]],
)
def test_a_malformed_item_is_skipped_and_the_others_kept(bad_item):
    good = json.loads(batch_item(Event.build("m", 1), "1-0", "0-1"))
    typed = [["1-0", "0-1", "m", None, 1, "/", 5], ["1-0", 1, "m", None, 1, "/", None]]
    batch = {"method": BATCH_METHOD, "epoch": "e", "shard": None}
    batch["events"] = [bad_item, good, *typed, good]
    assert [m["data"][1]["id"] for m in unbatched(batch)] == ["1-0", "1-0"]


@pytest.mark.parametrize(
    "fields",
    [{"events": "nope"}, {"epoch": 5}, {"shard": "1"}, {"shard": True}, {"shard": -1}],
)
def test_a_malformed_batch_gives_nothing(fields):
    good = json.loads(batch_item(Event.build("m", 1), "1-0", "0-1"))
    batch = {"method": BATCH_METHOD, "epoch": "e", "shard": None, "events": [good], **fields}
    assert unbatched(batch) == []


def test_the_web_delivers_each_event_of_a_batch_after_a_malformed_one():
    from streambridge.webapp.ext.queue_manager import StreamQueueManager

    good = emit_message(Event.build("m", 2), "2-0", "0-2", "e")
    item = batch_item(Event.build("m", 2), "2-0", "0-2")
    texts = [
        "not json",
        batch_message(['{"method":"emit","data":"broken"}', "[]", item], "e"),
        '{"method":"emit","data":"broken"}',
        good,
    ]

    class Listener:
        def messages(self):
            yield from texts

    manager = StreamQueueManager("redis://127.0.0.1:1/0", channel="q")
    decoded = list(manager._decoded(Listener()))
    broken = {"method": "emit", "data": "broken"}  # python-socketio's handler drops it
    assert decoded == [json.loads(good), broken, json.loads(good)]


def test_a_history_entry_is_an_items_tail_and_reads_back():
    from streambridge.history import stored_event
    from streambridge.queue import item_tail

    event = Event.build("chat", {"text": "hé"}, room="team:a", namespace="/x", sender="ann")
    fields = {"i": item_tail(event, "7-0")}
    assert stored_event("9-1", fields) == ("7-0", "chat", "ann", {"text": "hé"})
    # What the publish script writes to the queue: the same text, then the place.
    assert batch_item(event, "9-1", "7-0") == '["9-1' + fields["i"] + ',"/x","team:a"]'
    assert "team:a" not in fields["i"]  # the history's key names it


def test_a_history_entry_of_the_former_format_reads_back():
    from streambridge.history import stored_event

    fields = {"e": "7-0", "c": "chat", "b": '{"n":1}', "f": ""}
    assert stored_event("9-1", fields) == ("7-0", "chat", None, {"n": 1})


@pytest.mark.parametrize("tail", ['","7-0"', '",1,2,3,4', '","7-0","c",5,1', "not json"])
def test_a_malformed_history_entry_is_refused(tail):
    from streambridge.history import stored_event

    with pytest.raises(ValueError):
        stored_event("9-1", {"i": tail})


def test_a_batch_of_the_former_order_is_still_delivered():
    """Bridges of the release before send [position, entry, channel, namespace, room,
    sender, body] under the former method name, while web servers are upgraded."""
    from streambridge.queue import FORMER_BATCH_METHOD

    event = Event.build("chat", {"n": 1}, room="team:a", namespace="/x", sender="ann")
    former = {
        "method": FORMER_BATCH_METHOD,
        "epoch": "ep",
        "shard": None,
        "events": [["5-1", "4-0", "chat", "/x", "team:a", "ann", {"n": 1}]],
    }
    assert unbatched(former) == [json.loads(emit_message(event, "5-1", "4-0", "ep"))]
