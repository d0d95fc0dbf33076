"""Real headless Chromium (Debian's, installed by the set-up), driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import PASSWORDS

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: run scripts/setup.sh --test")
    return path


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def log_in(page, web, user: str = "alice") -> None:
    page.goto(web.url + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(web.url + "/")
    wait_status(page, "connected")


def wait_status(page, state: str, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "s => document.getElementById('status').dataset.state === s", arg=state, timeout=timeout
    )


def message_ids(page) -> list[str]:
    return page.eval_on_selector_all("#messages li", "els => els.map(e => e.dataset.entry)")


def settle(page, *events: tuple[int, str]) -> None:
    """Waits for these events ((shard, stream entry id): ids repeat across shards),
    published after everything a test checks, one in each shard it uses; then takes
    their rows away. A shard's events reach a page in order, so a duplicate or a stray
    event still on its way would have come before them."""
    rows = [f'#messages li[data-entry="{entry}"][data-key^="{shard}/"]' for shard, entry in events]
    for row in rows:
        page.locator(row).wait_for()
    page.evaluate("rows => rows.forEach(row => document.querySelector(row).remove())", rows)


def settled(page, redis_client) -> None:
    """``settle`` after a broadcast published now (one stream: shard 0)."""
    settle(page, (0, redis_client.xadd("events", {"channel": "settled", "body": '"settled"'})))


def wait_messages(page, count: int, timeout: float = 10_000) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#messages li').length >= n", arg=count, timeout=timeout
    )
