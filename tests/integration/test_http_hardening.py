"""The web app's HTTP surface: security headers, exact JSON, tidy refusals of odd input.

Real ``streambridge web`` processes, real HTTP and Socket.IO clients.
"""

from __future__ import annotations

import pytest
import requests

from tests.support import RECOVERY, Client, wait_until

pytestmark = pytest.mark.integration

HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def test_every_page_and_static_file_carries_the_security_headers(web):
    session = web.login("alice")
    for path in ("/login", "/", "/static/app.js", "/static/style.css", "/api/"):
        response = session.get(web.url + path, timeout=5)
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'", path  # no inline script
        assert directives["frame-ancestors"] == "'none'", path
        assert directives["object-src"] == "'none'", path
    # The client script, served by the extension in any host app, is not sniffed either.
    script = requests.get(web.url + "/streambridge.js", timeout=5)
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert script.headers["Content-Type"].startswith("text/javascript")


def test_api_takes_exactly_application_json(web, redis_client):
    session = web.login("alice")
    body = '{"channel": "message", "body": "x"}'
    for content_type in ("application/evil+json", "application/json-patch+json", "text/json"):
        response = session.post(
            web.url + "/api/", data=body, headers={"Content-Type": content_type}, timeout=5
        )
        assert response.status_code == 415, content_type
        assert response.json()["error"] == "send JSON (Content-Type: application/json)"
    ok = session.post(
        web.url + "/api/",
        data=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=5,
    )
    assert ok.status_code == 200, ok.text
    assert redis_client.xlen("events") == 1


def test_a_huge_shard_key_in_positions_is_ignored_quietly(web, clients):
    session = web.login("alice")
    for key in ("9" * 5000, "1" * 5, "-1", "\uff10"):  # huge, too long, negative, not ASCII
        client = Client()
        clients.append(client)
        client.connect(web, session, auth={"positions": {key: {"last_id": "0-0", "epoch": "e"}}})
        [(_, info, _)] = client.wait_for(1, RECOVERY)
        assert info["recovered"] is True  # as if no position was given
    wait_until(lambda: len(web.log_events("catchup.done")) == 4, 5, "four catch-ups")
    assert web.log_events("catchup.failed") == []
    assert '"level": "error"' not in web.output()
