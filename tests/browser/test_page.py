"""The page, as a person uses it, in real headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.browser.conftest import (
    log_in,
    message_ids,
    settle,
    settled,
    wait_messages,
    wait_status,
)
from tests.support import PacedProducer, Web, all_published, start_together, start_web, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_login_connect_and_send_from_the_page(page, web, bridge, redis_client):
    log_in(page, web)
    assert page.locator("#user").inner_text() == "alice"
    page.get_by_label("Message", exact=True).fill("hello from the page")
    page.get_by_label("Message", exact=True).press("Enter")
    wait_messages(page, 1)
    settled(page, redis_client)  # a duplicate would have come by now
    items = page.locator("#messages li")
    assert items.count() == 1
    assert items.first.locator(".body").inner_text() == "hello from the page"
    assert items.first.locator(".channel").inner_text() == "message"
    assert page.get_by_label("Message", exact=True).input_value() == ""


def test_failed_send_shows_an_error(page, web, bridge):
    log_in(page, web)
    page.get_by_label("Channel").fill("bad channel!")
    page.get_by_label("Message", exact=True).fill("x")
    page.get_by_role("button", name="Send").click()
    error = page.locator("#send-error")
    error.wait_for(state="visible")
    assert "channel" in error.inner_text()


def test_redis_cli_xadd_appears_within_a_second(page, web, bridge, redis_server):
    log_in(page, web)
    started = time.monotonic()
    subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "XADD", "events", "*",
         "channel", "alert", "body", '{"level": "info", "text": "disk ok"}'],
        check=True, capture_output=True,
    )  # fmt: skip
    wait_messages(page, 1, timeout=1_000)
    assert time.monotonic() - started < 1.0
    body = page.locator("#messages li .body").first.inner_text()
    assert '"text": "disk ok"' in body  # an object is shown as readable JSON
    assert "[object Object]" not in body


def test_web_restart_page_reconnects_and_catches_up_exactly_once(
    page, env, tmp_path, processes, web, bridge, redis_client, artifacts
):
    log_in(page, web)
    with PacedProducer(redis_client, "tick", 400) as producer:
        produced = producer.ids
        wait_until(lambda: len(produced) > 30, 10, "events before the restart")
        assert web.terminate() == 0
        down_from = len(produced)
        wait_status(page, "reconnecting")
        wait_until(lambda: len(produced) > down_from + 40, 10, "events while the server is down")
        down_to = len(produced)
        restarted = Web(env, tmp_path, name="web-restarted", port=web.port)
        processes.append(restarted)
        restarted.start()
        wait_status(page, "connected", timeout=20_000)
        wait_until(lambda: len(produced) > down_to + 60, 10, "events after the restart")
    wait_messages(page, len(produced), timeout=15_000)
    settled(page, redis_client)  # a duplicate would have come by now
    assert message_ids(page) == produced  # every event, exactly once, in stream order
    replayed = page.eval_on_selector_all(
        "#messages li.replayed", "els => els.map(e => e.dataset.entry)"
    )
    # Everything produced while the server was down came back through catch-up.
    assert set(produced[down_from:down_to]) <= set(replayed)
    assert page.locator("#messages li.replayed .tag").first.inner_text() == "caught up"
    assert page.locator("#notice").is_hidden()
    page.screenshot(path=str(artifacts / "page-after-web-restart.png"), full_page=True)


def test_other_users_events_never_appear_and_html_renders_as_text(page, web, bridge, redis_client):
    log_in(page, web)
    payload = '<img src=x onerror="window.__pwned=1">'
    redis_client.xadd("events", {"channel": "message", "body": '"for bob"', "room": "user:bob"})
    redis_client.xadd("events", {"channel": "message", "body": json.dumps(payload)})
    redis_client.xadd("events", {"channel": "message", "body": '"for alice"', "room": "user:alice"})
    wait_messages(page, 2)
    bodies = page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")
    assert bodies == [payload, "for alice"]
    assert page.locator("#messages img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_anonymous_page_redirects_to_login_and_opens_no_socket(page, web):
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws))
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(web.url + "/")
    assert page.url == web.url + "/login"
    page.wait_for_load_state("networkidle")
    assert sockets == []
    assert not [u for u in requests if "/ws/socket.io" in u]


def test_logout_closes_the_socket(page, web, bridge):
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws))
    log_in(page, web)
    wait_until(lambda: sockets, 5, "a websocket")
    [ws] = [s for s in sockets if "/ws/socket.io" in s.url]
    assert not ws.is_closed()
    assert '"socket.disconnected"' not in web.output()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(web.url + "/login")
    wait_until(lambda: '"socket.disconnected"' in web.output(), 5, "the server to see it close")
    page.goto(web.url + "/")
    assert page.url == web.url + "/login"


def test_sharded_streams_page_catches_up_every_shard(page, env, tmp_path, processes, redis_server):
    """Three shard streams on one Redis: broadcasts live in shard 0, alice's own events
    in another. Before the web server goes down the page has seen only broadcasts; its
    position in alice's shard comes from the server's recovery event, so what was
    published there while it was away is caught up too."""
    from streambridge.contract import shard_for
    from streambridge.publisher import Publisher
    from streambridge.settings import ProducerSettings
    from tests.support import Bridge

    sharded = dict(env, STREAMBRIDGE_SHARDS="3")
    assert shard_for(None, 3) != shard_for("user:alice", 3)
    web, bridge = Web(sharded, tmp_path), Bridge(sharded, tmp_path)
    processes.extend([web, bridge])
    start_together(web, bridge)
    publisher = Publisher(settings=ProducerSettings(redis_url=redis_server.url, shards=3))
    log_in(page, web)
    shown: list[str] = []

    def send(n: int, room: str | None) -> None:
        publisher.publish("tick", f"{n}", room=room)
        shown.append(f"{n}")

    for n in range(20):
        send(n, None)  # broadcasts only: nothing yet in alice's shard
    wait_messages(page, 20)
    assert web.terminate() == 0
    wait_status(page, "reconnecting")
    for n in range(20, 60):
        send(n, "user:alice" if n % 2 else None)
    restarted = Web(sharded, tmp_path, name="web-restarted", port=web.port)
    processes.append(restarted)
    restarted.start()
    wait_status(page, "connected", timeout=20_000)
    for n in range(60, 80):
        send(n, "user:alice" if n % 2 else None)
    wait_messages(page, len(shown), timeout=15_000)
    # A duplicate would have come by now, in either shard.
    settle(
        page,
        *(
            (shard_for(room, 3), publisher.publish("settled", "x", room=room))
            for room in (None, "user:alice")
        ),
    )
    bodies = page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")
    assert sorted(bodies, key=int) == shown  # every event exactly once
    replayed = page.eval_on_selector_all(
        "#messages li.replayed .body", "els => els.map(e => e.textContent)"
    )
    assert set(shown[20:60]) <= set(replayed)  # both shards caught up
    assert page.locator("#notice").is_hidden()


def test_a_refused_position_is_replaced_by_the_servers(page, web, bridge, redis_client):
    """A saved id the stream does not have (e.g. lost in a failover) is refused once;
    the page then takes the server's position, so the next connection recovers."""
    log_in(page, web)
    redis_client.xadd("events", {"channel": "message", "body": '"one"'})
    wait_messages(page, 1)
    key = "streambridge:alice:/ws/socket.io"
    page.evaluate(
        """key => {
            const saved = JSON.parse(sessionStorage.getItem(key));
            saved.shards["0"].last_id = "99999999999999-0";  // newer than anything stored
            sessionStorage.setItem(key, JSON.stringify(saved));
        }""",
        key,
    )
    recovered = "() => document.getElementById('status').dataset.recovered"
    page.reload()
    assert page.wait_for_function(recovered).json_value() == "false"
    assert "future" in page.locator("#notice").inner_text()
    redis_client.xadd("events", {"channel": "message", "body": '"two"'})
    wait_messages(page, 1)
    page.reload()
    assert page.wait_for_function(recovered).json_value() == "true"
    assert page.locator("#notice").is_hidden()
    saved = page.evaluate("key => JSON.parse(sessionStorage.getItem(key))", key)
    assert saved["shards"]["0"]["last_id"] != "99999999999999-0"


def test_a_room_on_request_is_joined_refused_and_rejoined_after_a_reload(
    page, web, bridge, redis_client
):
    """alice's users-file patterns allow team:* (tests/conftest.py)."""
    held = hold_room_requests(page)
    log_in(page, web)
    page.get_by_label("Room", exact=True).fill("team:red")
    page.get_by_role("button", name="Subscribe").click()
    # Until the server answers, the room's events do not come: it is marked so.
    request = let_next_go(page, held, before=lambda: check_marked(page, "team:red", "joining"))
    assert '"team:red"' in request
    page.locator('#rooms li[data-room="team:red"]:not(.joining)').wait_for()
    page.get_by_label("Room", exact=True).fill("secret:x")
    page.get_by_role("button", name="Subscribe").click()
    let_next_go(page, held)
    error = page.locator("#join-error")
    error.wait_for(state="visible")
    assert error.inner_text() == "Not subscribed to secret:x: not allowed"
    assert page.locator("#rooms li").count() == 1
    redis_client.xadd("events", {"channel": "message", "body": '"red 1"', "room": "team:red"})
    redis_client.xadd("events", {"channel": "message", "body": '"secret"', "room": "secret:x"})
    wait_messages(page, 1)
    # Away (a reload) while the room gets more: they are replayed, once, in order.
    page.goto("about:blank")
    for n in (2, 3):
        redis_client.xadd(
            "events", {"channel": "message", "body": f'"red {n}"', "room": "team:red"}
        )
    redis_client.xadd("events", {"channel": "message", "body": '"secret 2"', "room": "secret:x"})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    page.goto(web.url + "/")  # the same tab: its position and rooms were kept
    wait_status(page, "connected")
    let_next_go(page, held, before=lambda: check_marked(page, "team:red", "joining"))
    page.locator('#rooms li[data-room="team:red"]:not(.joining)').wait_for()
    wait_messages(page, 2)
    settled(page, redis_client)  # a duplicate or a refused room's event would have come
    bodies = page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")
    assert bodies == ["red 2", "red 3"]
    replayed = page.eval_on_selector_all(
        "#messages li", "els => els.map(e => e.classList.contains('replayed'))"
    )
    assert replayed == [True, True]
    page.get_by_role("button", name="Leave team:red").click()
    # Until the server has left the room it may send the room's events: the room stays
    # listed, marked, until the server answers.
    let_next_go(page, held, before=lambda: check_marked(page, "team:red", "leaving"))
    wait_until(lambda: page.locator("#rooms li").count() == 0, 5, "the room to be left")
    redis_client.xadd("events", {"channel": "message", "body": '"red after"', "room": "team:red"})
    redis_client.xadd("events", {"channel": "message", "body": '"for all"'})
    # "for all" comes after "red after" in the stream: it would have come before.
    page.locator("#messages li .body", has_text="for all").wait_for()
    bodies = page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")
    assert bodies == ["red 2", "red 3", "for all"]


def hold_room_requests(page) -> list:
    """Holds the page's requests to join or leave a room on their way to the server, as
    a slow network would: (server, frame) pairs, for ``let_next_go``."""
    held: list = []
    names = ('"streambridge:subscribe"', '"streambridge:unsubscribe"')

    def route(ws) -> None:
        server = ws.connect_to_server()

        def from_page(frame) -> None:
            if isinstance(frame, str) and any(name in frame for name in names):
                held.append((server, frame))
            else:
                server.send(frame)

        ws.on_message(from_page)

    page.route_web_socket(re.compile(r"/socket\.io/"), route)
    return held


def let_next_go(page, held: list, before=lambda: None) -> str:
    """Waits for the next held request, checks ``before()`` while it is held, then
    sends it on; returns it."""
    # Waiting in Playwright (not in time.sleep) lets it hand over the page's frames.
    wait_until(lambda: page.wait_for_timeout(20) or held, 5, "the page's next request")
    server, frame = held.pop(0)
    before()
    server.send(frame)
    return frame


def check_marked(page, room: str, mark: str) -> None:
    """The room is listed, marked "joining…" (it can be left) or "leaving…" (it cannot)."""
    row = page.locator(f'#rooms li[data-room="{room}"]')
    assert row.get_attribute("class") == mark
    assert f"{mark}…" in row.inner_text()
    assert row.get_by_role("button", name=f"Leave {room}").count() == (mark == "joining")


def test_the_page_shows_who_is_online_in_its_rooms_across_two_servers(
    browser, page, web, env, tmp_path, processes
):
    """carol is granted team:blue (tests/conftest.py); alice subscribes to it from a page
    served by another web server."""
    other = start_web(env, tmp_path, processes, "web-b")
    log_in(page, web, "carol")

    def online(p, room: str = "team:blue") -> str:
        return p.locator(f'#rooms li[data-room="{room}"] .online').get_attribute("data-online")

    wait_until(lambda: online(page) == "carol", 5, "carol online in her granted room")
    assert page.locator('#rooms li[data-room="team:blue"] button').count() == 0  # granted
    alice_context = browser.new_context()
    try:
        alice = alice_context.new_page()
        log_in(alice, other, "alice")
        alice.get_by_label("Room", exact=True).fill("team:blue")
        alice.get_by_role("button", name="Subscribe").click()
        wait_until(lambda: online(alice) == "alice,carol", 5, "both, on alice's page")
        wait_until(lambda: online(page) == "alice,carol", 5, "alice, on carol's page")
        assert (
            "online: alice, carol" in page.locator('#rooms li[data-room="team:blue"]').inner_text()
        )
        alice.get_by_role("button", name="Leave team:blue").click()
        wait_until(lambda: online(page) == "carol", 5, "alice gone from carol's page")
        alice.get_by_label("Room", exact=True).fill("team:blue")
        alice.get_by_role("button", name="Subscribe").click()
        wait_until(lambda: online(page) == "alice,carol", 5, "alice back")
        alice.close()  # the tab closes: her last connection
        wait_until(lambda: online(page) == "carol", 5, "alice gone with her tab")
    finally:
        alice_context.close()


def test_the_page_opens_with_the_last_events_and_shows_each_once(page, web, bridge, redis_client):
    """The page's first view comes from the rooms' history (GET /api/history): what was
    published before it opened, then live events, none twice."""
    for n in range(3):
        redis_client.xadd("events", {"channel": "message", "body": f'"before {n}"'})
    redis_client.xadd("events", {"channel": "message", "body": '"mine"', "room": "user:alice"})
    redis_client.xadd("events", {"channel": "message", "body": '"bob"', "room": "user:bob"})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    log_in(page, web)
    wait_messages(page, 4)
    redis_client.xadd("events", {"channel": "message", "body": '"live"'})
    wait_messages(page, 5)
    page.goto("about:blank")
    redis_client.xadd("events", {"channel": "message", "body": '"while away"'})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    # Back: the event missed is replayed and is in the history too; shown once.
    page.goto(web.url + "/")
    wait_status(page, "connected")
    wait_messages(page, 6)
    settled(page, redis_client)  # a duplicate would have come by now
    bodies = page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")
    assert bodies == ["before 0", "before 1", "before 2", "mine", "live", "while away"]


def test_a_page_left_open_keeps_its_newest_500_rows(page, web, bridge, redis_client):
    """Older rows go: each new row costs layout in proportion to the list, so a tab left
    open for hours would otherwise slow until it missed its own pings."""
    log_in(page, web)
    wait_status(page, "connected")
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(560):
            pipe.xadd("events", {"channel": "message", "body": str(n)})
        pipe.execute()
    # In stream order, so once the last is shown every one has been.
    page.wait_for_function(
        "() => document.querySelector('#messages li:last-child .body')?.textContent === '559'"
    )
    bodies = page.eval_on_selector_all("#messages li .body", "els => els.map(e => e.textContent)")
    assert bodies == [str(n) for n in range(60, 560)]
