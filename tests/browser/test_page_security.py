"""The page under its security headers, in real headless Chromium: it works under its
Content-Security-Policy, the policy really stops injected script, and no other site can
frame the app."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in, wait_messages

pytestmark = [pytest.mark.integration, pytest.mark.browser]

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective);
});
"""


def test_the_page_works_under_its_policy_and_the_policy_bites(context, web, bridge):
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    log_in(page, web)  # the socket connected under connect-src 'self'
    page.get_by_label("Message", exact=True).fill("under a strict policy")
    page.get_by_label("Message", exact=True).press("Enter")  # fetch to /api/ under the CSP
    wait_messages(page, 1)
    assert page.locator("#messages li .body").first.inner_text() == "under a strict policy"
    assert page.evaluate("window.__csp") == []
    assert not [m for m in console if "Content Security Policy" in m]

    # What an HTML injection would try: an inline script. It must not run.
    page.evaluate(
        """() => {
          const s = document.createElement("script");
          s.textContent = "window.__injected = true";
          document.body.append(s);
        }"""
    )
    page.wait_for_function("window.__csp.length > 0")
    assert page.evaluate("window.__injected") is None
    [violated] = page.evaluate("window.__csp")
    assert violated.startswith("script-src")  # "script-src-elem" in current Chromium


def test_no_other_site_can_frame_the_app(page, web):
    # set_content returns once the page has loaded, and its load waits for the frame.
    page.set_content(f'<iframe id="f" src="{web.url}/login"></iframe>', wait_until="load")
    assert page.frame_locator("#f").locator("#username").count() == 0  # never rendered there
    # The same URL opened directly renders (it is the framing that is refused).
    page.goto(web.url + "/login")
    assert page.locator("#username").count() == 1
