"""The client script (/streambridge.js) in a host app's page, in real Chromium."""

from __future__ import annotations

import pytest

from tests.support import HostApp, PacedProducer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def host(env, tmp_path, processes):
    proc = HostApp(env, tmp_path)
    processes.append(proc)
    return proc.start()


def ids_on_page(page) -> list[str]:
    return page.eval_on_selector_all("#events li", "els => els.map(e => e.dataset.entry)")


def test_client_script_catches_up_after_restart_without_duplicates(
    page, host, bridge, env, tmp_path, processes, redis_client
):
    page.goto(host.url + "/login")
    page.get_by_label("Name").fill("alice")
    page.get_by_label("Password").fill(HostApp.password)
    page.get_by_role("button", name="Enter").click()
    page.wait_for_function("document.getElementById('status')?.textContent === 'connected'")
    producer = PacedProducer(redis_client, "message", 300).start()
    produced = producer.ids
    try:
        wait_until(lambda: len(produced) > 30, 10, "events before the restart")
        assert host.terminate() == 0
        down = len(produced)
        wait_until(lambda: len(produced) > down + 40, 10, "events while down")
        restarted = HostApp(env, tmp_path, name="host-restarted", port=host.port)
        processes.append(restarted)
        restarted.start()
        page.wait_for_function(
            "document.getElementById('status')?.textContent === 'connected'", timeout=20_000
        )
    finally:
        producer.join()  # it runs to all 300 events
    page.wait_for_function(
        "n => document.querySelectorAll('#events li').length >= n", arg=len(produced)
    )
    # One more, after them in the stream: a duplicate would have come before it.
    last = redis_client.xadd("events", {"channel": "message", "body": '"last"'})
    page.locator(f'#events li[data-entry="{last}"]').wait_for()
    assert ids_on_page(page) == [*produced, last]  # no duplicates, order kept
    assert page.evaluate("document.body.dataset.lost") is None

    # A reload in the same tab resumes from the last id: nothing is replayed twice.
    page.reload()
    page.wait_for_function("document.getElementById('status')?.textContent === 'connected'")
    more = redis_client.xadd("events", {"channel": "message", "body": '"after reload"'})
    page.wait_for_function("document.querySelectorAll('#events li').length >= 1")
    assert ids_on_page(page) == [more]


def test_a_page_watches_its_own_order_and_is_refused_anothers(page, host, bridge, redis_client):
    """The example's authorize_room hook: alice's orders are 1001 and 1002, bob's 2002."""
    page.goto(host.url + "/login")
    page.get_by_label("Name").fill("alice")
    page.get_by_label("Password").fill(HostApp.password)
    page.get_by_role("button", name="Enter").click()
    page.goto(host.url + "/?order=2002")
    page.wait_for_function(
        "document.getElementById('order-status')?.textContent === 'refused: not allowed'"
    )
    redis_client.xadd("events", {"channel": "order", "body": '"bob paid"', "room": "order:2002"})
    page.goto(host.url + "/?order=1001")
    page.wait_for_function(
        "document.getElementById('order-status')?.textContent === 'watching order:1001'"
    )
    redis_client.xadd("events", {"channel": "order", "body": '"shipped"', "room": "order:1001"})
    redis_client.xadd("events", {"channel": "order", "body": '"bob again"', "room": "order:2002"})
    # After "bob again" in the stream: bob's event, if it could come, would come first.
    redis_client.xadd("events", {"channel": "order", "body": '"delivered"', "room": "order:1001"})
    page.wait_for_function("document.querySelectorAll('#order-events li').length >= 2")
    texts = page.eval_on_selector_all("#order-events li", "els => els.map(e => e.textContent)")
    assert texts == ['"shipped"', '"delivered"']
    # Presence: the page shows who has the order open; the app reads it on the server.
    page.wait_for_function("document.getElementById('order-viewers')?.textContent === 'alice'")
    session = host.login("alice")
    viewers = session.get(host.url + "/orders/1001/viewers", timeout=5)
    assert viewers.json() == {"room": "order:1001", "viewers": {"alice": 1}}
    assert session.get(host.url + "/orders/2002/viewers", timeout=5).status_code == 403
    page.goto("about:blank")  # the page closes: its connection leaves the room
    wait_until(
        lambda: session.get(host.url + "/orders/1001/viewers", timeout=5).json()["viewers"] == {},
        5,
        "alice's page to leave order:1001",
    )
