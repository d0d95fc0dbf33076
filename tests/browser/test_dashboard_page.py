"""The operator dashboard in real headless Chromium: an admin sees it live and acts on
dead letters through its confirmations; anyone else gets 403 and no socket data."""

from __future__ import annotations

import pytest
from streambridge.webapp.app.users import UserStore

from tests.browser.conftest import log_in
from tests.support import (
    PASSWORDS,
    SOCKETIO_PATH,
    all_published,
    dead_letter,
    open_socket,
    start_web,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PATH = "/streambridge/dashboard"
EVENT = "streambridge:dashboard"


@pytest.fixture
def web(env, users_file, tmp_path, processes):
    UserStore(users_file).add("dora", PASSWORDS["dora"], admin=True)
    return start_web(dict(env, STREAMBRIDGE_DASHBOARD_SAMPLE_S="0.5"), tmp_path, processes, "web")


def row(page, channel: str):
    return page.locator("#dead tbody tr").filter(has_text=f'"channel":"{channel}"')


def test_an_admin_sees_it_live_and_requeues_a_dead_letter(
    page, web, bridge, redis_client, artifacts
):
    redis_client.xadd("events", {"channel": "connect", "body": "1"})  # a reserved name
    dead_letter(redis_client, '"second chance"')
    wait_until(lambda: redis_client.xlen("events:dead") == 2, 10, "the bridge's dead letter")
    log_in(page, web, "dora")
    page.goto(web.url + PATH)
    page.wait_for_selector("#status[data-state=connected]")
    for chart in ("rates", "latency", "connected", "dead"):
        page.wait_for_selector(f"#chart-{chart}[data-ready=true] canvas")
    shard = page.locator("#shards tbody tr").first
    assert shard.locator("code").first.inner_text() == "events"
    assert page.locator("#shards .bridge").first.get_attribute("data-state") in ("alive", "idle")
    assert page.locator("#now-dead_letters").inner_text() == "2"

    # Live, over the socket: new events show without a reload.
    before = int(shard.locator(".length").inner_text())
    for n in range(5):
        redis_client.xadd("events", {"channel": "message", "body": str(n)})
    page.wait_for_function(
        "([n]) => document.querySelector('#shards .length')?.textContent === String(n)",
        arg=[before + 5],
    )
    page.wait_for_function("() => document.getElementById('now-connected')?.textContent === '1'")

    # Inspect shows every field.
    wait_until(lambda: row(page, "message").count() == 1, 10, "the letter listed")
    row(page, "message").get_by_role("button", name="Inspect").click()
    page.wait_for_selector("#inspect[open] #inspect-body:has-text('second chance')")
    page.locator("#inspect").get_by_role("button", name="Close").click()

    # Requeue asks first; Cancel changes nothing.
    row(page, "message").get_by_role("button", name="Requeue").click()
    page.wait_for_selector("#confirm[open] #confirm-text:has-text('Requeue dead letter')")
    page.get_by_role("button", name="Cancel").click()
    assert redis_client.xlen("events:dead") == 2 and row(page, "message").count() == 1
    row(page, "message").get_by_role("button", name="Requeue").click()
    page.locator("#confirm").get_by_role("button", name="Confirm").click()
    page.wait_for_selector("#notice:has-text('Requeued 1 dead letter')")
    # The result stays while pushes keep coming (each 0.5 s); only an outage notice goes.
    pushes = int(page.evaluate("() => document.body.dataset.updates"))
    page.wait_for_function("([n]) => Number(document.body.dataset.updates) >= n", arg=[pushes + 2])
    assert page.locator("#notice").inner_text() == "Requeued 1 dead letter."
    wait_until(lambda: row(page, "message").count() == 0, 10, "the letter gone from the list")
    assert redis_client.xlen("events:dead") == 1
    wait_until(lambda: all_published(redis_client), 10, "the requeued event published")
    [(_, newest)] = redis_client.xrevrange("events", count=1)
    assert newest == {"channel": "message", "body": '"second chance"'}
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)


def test_anyone_else_gets_403_and_no_socket_data(page, web, bridge, clients):
    page.goto(web.url + PATH)
    assert page.url == web.url + "/login"  # not logged in: to the login page
    log_in(page, web, "bob")
    assert page.goto(web.url + PATH).status == 403
    page.goto(web.url + "/")
    answer = page.evaluate(
        """([path, event]) => new Promise((resolve) => {
          window.__pushes = 0;
          const socket = io({ path, transports: ["websocket"] });
          socket.on(event, () => { window.__pushes += 1; });
          socket.on("connect", () => socket.emit(event, { watch: true }, resolve));
        })""",
        [SOCKETIO_PATH, EVENT],
    )
    assert answer == {"ok": False, "error": "not allowed"}
    # Meanwhile an admin on the same server is sent the overview after each sample.
    admin = open_socket(clients, web, web.login("dora"))
    assert admin.sio.call(EVENT, {"watch": True}, timeout=5)["ok"] is True
    admin.wait_for(3, EVENT)
    assert page.evaluate("() => window.__pushes") == 0
