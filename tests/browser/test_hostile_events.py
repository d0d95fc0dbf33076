"""Hostile and broken events against the page, in real headless Chromium.

Entries a page cannot take (Socket.IO's own event names, streambridge's own, a body a
handler throws on), server events forged by anyone who can PUBLISH on the Socket.IO
queue, and who sent what: the page must neither get stuck in a reconnect loop nor
believe a forged server event, and must show who sent each event.
"""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import log_in, message_ids, wait_messages, wait_status
from tests.support import RECOVERY, positions_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]

QUEUE = "flask-socketio"
RESERVED = ["disconnect", "connect_error", "newListener", RECOVERY]
FUTURE_ID = "9999999999999-0"


def position_key(user: str) -> str:
    return f"streambridge:{user}:/ws/socket.io"


def saved_position(page, user: str) -> dict:
    return page.evaluate("key => JSON.parse(sessionStorage.getItem(key))", position_key(user))


def bodies(page) -> list[str]:
    return page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")


def senders(page) -> list[str]:
    return page.eval_on_selector_all("#messages li .from", "els => els.map(e => e.textContent)")


def wait_body(page, text: str, timeout: float = 10_000) -> None:
    page.wait_for_function(
        """t => [...document.querySelectorAll('#messages li .body')]
                .some(e => e.textContent === t)""",
        arg=text,
        timeout=timeout,
    )


def wait_recovered(page) -> str:
    """The page's last recovery notice: "true" or "false" (waits for the first one)."""
    return page.wait_for_function(
        "() => document.getElementById('status').dataset.recovered"
    ).json_value()


def record_status_changes(page) -> None:
    page.evaluate(
        """() => {
            window.statusChanges = [];
            window.streambridgePage.onStatus(s => window.statusChanges.push(s));
        }"""
    )


def forge(redis_client, event: str, data: list, room: str) -> None:
    """What anyone who can PUBLISH on the queue channel can make every web server emit."""
    message = {
        "method": "emit",
        "event": event,
        "data": data,
        "namespace": "/",
        "room": room,
        "skip_sid": None,
        "callback": None,
        "host_id": "attacker",
    }
    assert redis_client.publish(QUEUE, json.dumps(message)) >= 1  # the web server listens


def test_a_page_is_not_stuck_by_entries_it_cannot_process(page, web, bridge, redis_client):
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(err.message))
    log_in(page, web, "bob")
    record_status_changes(page)
    page.evaluate(
        """() => window.streambridgePage.on('message', function (body) {
            if (body === 'boom') throw new Error('handler failed');
        })"""
    )
    forged_recovery = {
        "recovered": False,
        "reason": "forged",
        "positions": {"0": {"last_id": FUTURE_ID, "epoch": "x"}},
    }
    # Straight to the stream, as an old or hostile producer would (bypassing /api/).
    for channel in RESERVED:
        body = json.dumps(forged_recovery) if channel == RECOVERY else '"hostile"'
        redis_client.xadd("events", {"channel": channel, "body": body, "room": "user:bob"})

    def dead_channels() -> list[str]:
        return [fields["channel"] for _, fields in redis_client.xrange("events:dead")]

    wait_until(lambda: len(dead_channels()) >= len(RESERVED), 10, "the dead letters")
    assert sorted(dead_channels()) == sorted(RESERVED)
    assert all("reserved" in f["reason"] for _, f in redis_client.xrange("events:dead"))

    boom = redis_client.xadd("events", {"channel": "message", "body": '"boom"'})
    after = redis_client.xadd("events", {"channel": "message", "body": '"after"'})
    # A channel that is also a property of every JS object: a name like any other.
    odd = redis_client.xadd("events", {"channel": "constructor", "body": '"odd name"'})
    wait_body(page, "odd name")
    wait_until(lambda: errors, 5, "the handler's error to be reported")
    # The page's own renderer ran for the event whose handler threw, and for the next ones.
    assert bodies(page) == ["boom", "after", "odd name"]
    assert message_ids(page) == [boom, after, odd]
    assert page.evaluate("window.statusChanges") == []  # never disconnected
    assert page.locator("#status").get_attribute("data-state") == "connected"
    assert saved_position(page, "bob")["shards"]["0"]["last_id"] == positions_of(redis_client)[-1]
    assert page.locator("#notice").is_hidden()
    assert [e for e in errors if "handler failed" not in e] == []  # only the one we threw
    assert any("handler failed" in e for e in errors), errors
    connected = [r for r in web.log_events("socket.connected") if r.get("user") == "bob"]
    assert len(connected) == 1, connected  # no reconnect-and-replay loop

    # Without the page's first view from the history, so that only a replay could show
    # anything after the reload.
    page.route("**/api/history*", lambda route: route.fulfill(json={"events": []}))
    page.reload()
    wait_status(page, "connected")
    # The recovery notice comes after the replay: whatever was replayed is shown by now.
    assert wait_recovered(page) == "true"
    assert message_ids(page) == []  # past them all: nothing is replayed, "boom" least of all
    assert page.locator("#notice").is_hidden()
    assert saved_position(page, "bob")["shards"]["0"]["last_id"] == positions_of(redis_client)[-1]


def test_the_client_trusts_server_events_only_in_their_shape(page, web, bridge, redis_client):
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(err.message))
    log_in(page, web, "alice")
    assert wait_recovered(page) == "true"
    first = redis_client.xadd("events", {"channel": "message", "body": '"first"'})
    wait_body(page, "first")
    epoch = redis_client.get("events:epoch")
    assert epoch
    [position] = positions_of(redis_client)
    assert saved_position(page, "alice") == {"shards": {"0": {"last_id": position, "epoch": epoch}}}

    # Each would, if the client took it, show the notice and move the position to an id
    # in the future of the real epoch (so the real event below would not move it back).
    future = {"0": {"last_id": FUTURE_ID, "epoch": epoch}}
    forged = {"recovered": False, "replayed": 0, "reason": "forged", "epoch": epoch}
    forge(redis_client, RECOVERY, [{**forged, "positions": future}, {"id": "1-0"}], "user:alice")
    forge(
        redis_client,
        RECOVERY,
        [{**forged, "recovered": "false", "positions": future}],
        "user:alice",
    )
    bad_id = {"0": {"last_id": "not-an-id", "epoch": epoch}}
    forge(redis_client, RECOVERY, [{**forged, "positions": bad_id}], "user:alice")
    as_array = [{"last_id": FUTURE_ID, "epoch": epoch}]
    forge(redis_client, RECOVERY, [{**forged, "positions": as_array}], "user:alice")
    # Not a stream event (no marker): delivered as a plain emit, with a meta id no stream has.
    forge(redis_client, "message", ["x", {"id": "not-an-id", "epoch": "e"}], "user:alice")

    # Published after the forgeries on the same channel: handled after them.
    real = redis_client.xadd("events", {"channel": "message", "body": '"real"'})
    wait_body(page, "real")  # the forgeries, published before it, were handled before it
    assert bodies(page) == ["first", "real"]
    assert message_ids(page) == [first, real]
    assert errors == []  # none of them got as far as a handler (the page's renderer)
    assert page.locator("#notice").is_hidden()
    assert page.locator("#status").get_attribute("data-recovered") == "true"
    now = {"0": {"last_id": positions_of(redis_client)[-1], "epoch": epoch}}
    assert saved_position(page, "alice") == {"shards": now}
    assert page.evaluate("window.streambridgePage.position.shards") == now


def test_the_page_shows_who_sent_each_event(browser, page, web, bridge, redis_client):
    log_in(page, web, "alice")
    other = browser.new_context(viewport={"width": 1000, "height": 700})
    try:
        other.set_default_timeout(10_000)
        bob = other.new_page()
        log_in(bob, web, "bob")
        bob.evaluate(
            """() => {
                window.senders = [];
                window.streambridgePage.onAny(function (channel, body, meta) {
                    window.senders.push([body, meta.from === undefined ? null : meta.from]);
                });
            }"""
        )
        page.get_by_label("Message", exact=True).fill("hi bob")
        page.get_by_label("Message", exact=True).press("Enter")
        wait_messages(bob, 1)
        redis_client.xadd("events", {"channel": "message", "body": '"from a producer"'})
        # Last: once it is shown, a duplicate of the others would have been too.
        redis_client.xadd("events", {"channel": "message", "body": '"sentinel"'})
        wait_body(bob, "sentinel")
        wait_body(page, "sentinel")
        assert bodies(bob) == ["hi bob", "from a producer", "sentinel"]
        assert senders(bob) == ["from alice", "system", "system"]
        assert bob.evaluate("window.senders") == [
            ["hi bob", "alice"],
            ["from a producer", None],
            ["sentinel", None],
        ]
        assert senders(page) == ["from alice", "system", "system"]  # her own page too
    finally:
        other.close()


def test_an_entry_published_again_under_a_newer_position_is_shown_once(page, web, bridge,
                                                                        redis_client):  # fmt: skip
    # What a Redis that persists every second can do after a crash: the publish went out,
    # its ack was lost with the last second, and the bridge publishes the entry again.
    log_in(page, web, "alice")
    page.evaluate(
        """() => {
            window.metas = [];
            window.streambridgePage.onAny((channel, body, meta) => window.metas.push(meta));
        }"""
    )
    redis_client.xadd("events", {"channel": "message", "body": '"once"', "room": "user:alice"})
    wait_body(page, "once")
    meta = page.evaluate("window.metas[0]")
    again = f"{int(meta['id'].split('-')[0]) + 1}-0"
    forge(redis_client, "message", ["once", {**meta, "id": again}], "user:alice")
    redis_client.xadd("events", {"channel": "message", "body": '"sentinel"', "room": "user:alice"})
    wait_body(page, "sentinel")
    assert bodies(page) == ["once", "sentinel"]
    assert len(page.evaluate("window.metas")) == 2  # handlers saw it once too
