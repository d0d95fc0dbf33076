"""``GET /api/history``: a room's newest events for a page's first view, from the
per-room history, with the authorization of live delivery. Real processes."""

from __future__ import annotations

import json

import pytest
import requests

from tests.support import RECOVERY, all_published, open_socket, wait_until

pytestmark = pytest.mark.integration


def history(web, session, **params):
    return session.get(f"{web.url}/api/history", params=params, timeout=5)


def test_a_rooms_events_newest_first_paged_with_the_live_meta(web, bridge, clients, redis_client):
    alice = open_socket(clients, web, web.login("alice"))
    alice.wait_for(1, RECOVERY)
    for n in range(5):
        redis_client.xadd(
            "events", {"channel": "tick", "body": json.dumps({"n": n}), "room": "user:alice"}
        )
    redis_client.xadd("events", {"channel": "tick", "body": '"for bob"', "room": "user:bob"})
    redis_client.xadd("events", {"channel": "news", "body": '"for all"'})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    received = [*alice.wait_for(5, "tick"), *alice.wait_for(1, "news")]
    live = {meta["id"]: (channel, body, meta) for channel, body, meta in received}
    session = web.login("alice")
    first = history(web, session, room="user:alice", limit=3).json()
    assert [e["body"]["n"] for e in first["events"]] == [4, 3, 2]
    assert first["next"] == first["events"][-1]["meta"]["id"]
    rest = history(web, session, room="user:alice", limit=3, before=first["next"]).json()
    assert [e["body"]["n"] for e in rest["events"]] == [1, 0]
    assert rest["next"] is None
    for event in first["events"] + rest["events"]:
        channel, body, meta = live[event["meta"]["id"]]
        assert (event["channel"], event["body"], event["meta"]) == (channel, body, meta)
    broadcast = history(web, session).json()
    assert [e["body"] for e in broadcast["events"]] == ["for all"]


def test_only_rooms_the_user_could_receive_and_bounded_input(web, bridge, redis_client):
    redis_client.xadd("events", {"channel": "tick", "body": '"blue"', "room": "team:blue"})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    alice, bob, carol = web.login("alice"), web.login("bob"), web.login("carol")
    assert history(web, bob, room="user:alice").status_code == 403  # another user's
    assert history(web, bob, room="team:blue").status_code == 403
    assert history(web, carol, room="team:blue").json()["events"][0]["body"] == "blue"
    assert history(web, alice, room="team:blue").status_code == 200  # her team:* pattern
    assert history(web, alice, room="user:alice", limit=101).status_code == 400
    assert history(web, alice, room="user:alice", limit="x").status_code == 400
    for before in ("yesterday", "1-0\n", "\u0661-0", "99999999999999999999-0"):
        assert history(web, alice, room="user:alice", before=before).status_code == 400
    assert history(web, alice, room="x" * 300).status_code == 400
    assert requests.get(f"{web.url}/api/history", timeout=5).status_code == 401
