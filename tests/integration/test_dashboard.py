"""The operator dashboard against real processes: who may see it (HTTP and socket), the
figures it shows across two web servers, and its dead-letter actions."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from streambridge.webapp.app.users import UserStore

from streambridge.embedded_redis import RedisServer
from tests.support import (
    PASSWORDS,
    RECOVERY,
    ROOT,
    Bridge,
    all_published,
    csrf_token,
    dead_letter,
    open_socket,
    start_web,
    wait_until,
)

pytestmark = pytest.mark.integration

PATH = "/streambridge/dashboard"
EVENT = "streambridge:dashboard"
STEP_S = "0.5"
DORA = PASSWORDS["dora"]


@pytest.fixture
def admin_env(env, users_file):
    UserStore(users_file).add("dora", DORA, admin=True)
    return dict(env, STREAMBRIDGE_DASHBOARD_SAMPLE_S=STEP_S)


@pytest.fixture
def web(admin_env, tmp_path, processes):
    return start_web(admin_env, tmp_path, processes, "web")


def admin(web) -> requests.Session:
    return web.login("dora", DORA)


def post(web, session, action: str, body, **headers) -> requests.Response:
    return session.post(
        f"{web.url}{PATH}/dead/{action}",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", **headers},
        timeout=5,
    )


def watch(client) -> dict:
    return client.sio.call(EVENT, {"watch": True}, timeout=5)


def pushes(client) -> list:
    return [body for _, body, _ in client.received(EVENT)]


def test_only_admins_see_it_over_http_and_the_socket(web, bridge, clients):
    bob = web.login("bob")
    for path in ("", "/overview", "/dead", "/dead/one?stream=events&id=1-0"):
        anonymous = requests.get(f"{web.url}{PATH}{path}", timeout=5, allow_redirects=False)
        if path:
            assert anonymous.status_code == 401
        else:  # the page sends a person to the login page
            assert (anonymous.status_code, anonymous.headers["Location"]) == (302, "/login")
        refused = bob.get(f"{web.url}{PATH}{path}", timeout=5)
        assert refused.status_code == 403, path
        assert "dead_letters" not in refused.text and "shards" not in refused.text
    for action in ("requeue", "delete"):
        assert post(web, bob, action, {"all": True}).status_code == 403
    dora = admin(web)
    page = dora.get(f"{web.url}{PATH}", timeout=5)
    assert page.status_code == 200 and 'id="chart-rates"' in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")

    # Over the socket: a non-admin is refused and sent nothing, while the admin on the
    # same server gets the overview after every sample.
    bob_socket = open_socket(clients, web, bob)
    dora_socket = open_socket(clients, web, dora)
    assert watch(bob_socket) == {"ok": False, "error": "not allowed"}
    answer = watch(dora_socket)
    assert answer["ok"] and answer["shards"][0]["stream"] == "events"
    wait_until(lambda: len(pushes(dora_socket)) >= 3, 10, "three pushes to the admin")
    assert pushes(bob_socket) == []
    # Unwatching stops the pushes: the count stays while another admin's keep coming.
    assert dora_socket.sio.call(EVENT, {"watch": False}, timeout=5)["watching"] is False
    stopped_at = len(pushes(dora_socket))
    other = open_socket(clients, web, admin(web))
    watch(other)
    wait_until(lambda: len(pushes(other)) >= 3, 10, "pushes to the other admin")
    assert len(pushes(dora_socket)) == stopped_at


def test_figures_across_two_web_servers(
    web, admin_env, tmp_path, processes, bridge, clients, redis_client
):
    second = start_web(admin_env, tmp_path, processes, "web-2")
    dora = open_socket(clients, second, admin(second))
    alice = open_socket(clients, web, web.login("alice"))
    carol = open_socket(clients, web, web.login("carol"))
    for client in (alice, carol):
        client.wait_for(1, RECOVERY)
    watch(dora)

    def latest() -> dict:
        return pushes(dora)[-1]

    def last(series: list):
        return next((v for v in reversed(series) if v is not None), None)

    # Both servers have sampled (their first samples are no rate yet): what comes now
    # is counted whole.
    wait_until(
        lambda: pushes(dora) and last(latest()["series"]["connected"]) == 3,
        10,
        "3 clients connected over both servers",
    )
    count = 40
    for n in range(count):
        redis_client.xadd("events", {"channel": "message", "body": json.dumps(n)})
    wait_until(lambda: all_published(redis_client), 10, "acks")
    alice.wait_for(count, "message")
    carol.wait_for(count, "message")

    def totals() -> tuple[float, float]:
        series, step = latest()["series"], latest()["step_s"]
        events_in = sum(v for v in series["events_in"] if v is not None) * step
        deliveries = sum(v for v in series["deliveries"] if v is not None) * step
        return events_in, deliveries

    # 40 events in; 120 deliveries out: alice and carol on the first server, and the
    # admin's own socket on the second (it receives the broadcast too).
    expected = pytest.approx((count, 3 * count), abs=0.001)  # the rates are rounded
    wait_until(lambda: totals() == expected, 10, f"{count} in, {3 * count} out")
    overview = latest()
    p50, p99 = last(overview["series"]["p50_ms"]), last(overview["series"]["p99_ms"])
    assert 0 < p50 <= p99 < 5_000
    [shard] = overview["shards"]
    assert shard["length"] == count
    [group] = shard["groups"]
    assert (group["lag"], group["pending"], group["oldest_pending_age_s"]) == (0, 0, None)
    [consumer] = group["consumers"]
    assert consumer["state"] == "alive" and consumer["last_seen_s"] < 3

    # A stopped bridge is gone at once (it frees its name); an entry read and never
    # acked is pending, and its age grows.
    assert bridge.terminate() == 0
    redis_client.xadd("events", {"channel": "message", "body": '"late"'})
    redis_client.xreadgroup("bridge", "ghost", {"events": ">"}, count=1)

    def group_now() -> dict:
        return latest()["shards"][0]["groups"][0]

    wait_until(lambda: (group_now()["oldest_pending_age_s"] or 0) >= 1.0, 10, "age grows")
    states = {c["name"]: c["state"] for c in group_now()["consumers"]}
    assert states["ghost"] == "gone" and states[consumer["name"]] == "gone"
    assert group_now()["pending"] == 1


def test_dead_letters_listed_inspected_requeued_and_deleted(web, bridge, clients, redis_client):
    alice = open_socket(clients, web, web.login("alice"))
    alice.wait_for(1, RECOVERY)
    redis_client.xadd("events", {"channel": "connect", "body": "1"})  # a reserved name
    redis_client.xadd("events", {"channel": "order", "body": "{not json"})
    dead_letter(redis_client, '"second chance"')  # undeliverable once, fine now
    wait_until(lambda: redis_client.xlen("events:dead") == 3, 10, "two dead-lettered")
    dora = admin(web)
    page = dora.get(f"{web.url}{PATH}/dead", params={"count": 2}, timeout=5).json()
    assert (len(page["dead_letters"]), page["total"]) == (2, 3)
    listed = dora.get(f"{web.url}{PATH}/dead", timeout=5).json()["dead_letters"]
    by_channel = {d["fields"]["channel"]: d for d in listed}
    assert "reserved" in by_channel["connect"]["reason"]
    assert "not valid JSON" in by_channel["order"]["reason"]
    again = by_channel["message"]
    one = dora.get(
        f"{web.url}{PATH}/dead/one", params={"stream": "events", "id": again["id"]}, timeout=5
    ).json()["dead_letter"]
    assert one == again and one["fields"] == {"channel": "message", "body": '"second chance"'}

    # Each action needs the page's CSRF token and JSON; bad names are refused.
    target = {"stream": "events", "id": again["id"]}
    token = dora.headers.pop("X-CSRFToken")
    assert post(web, dora, "requeue", target).status_code == 400  # no token
    assert post(web, dora, "requeue", target, **{"X-CSRFToken": "forged"}).status_code == 400
    dora.headers["X-CSRFToken"] = token
    form = dora.post(f"{web.url}{PATH}/dead/requeue", data=target, timeout=5)
    assert form.status_code == 415
    assert post(web, dora, "requeue", {"stream": "events", "id": "5"}).status_code == 400
    assert post(web, dora, "requeue", {"stream": "nope", "id": "1-0"}).status_code == 404
    assert post(web, dora, "delete", {"stream": "events", "id": "1-0"}).status_code == 404
    assert redis_client.xlen("events:dead") == 3  # nothing changed so far

    moved = post(web, dora, "requeue", target).json()
    assert moved["count"] == 1 and moved["moved"][0][0] == again["id"]
    assert alice.wait_for(1, "message")[0][1] == "second chance"  # delivered this time
    deleted = post(web, dora, "delete", {"stream": "events", "id": by_channel["order"]["id"]})
    assert deleted.json()["count"] == 1
    left = [
        d["fields"]["channel"] for d in dora.get(f"{web.url}{PATH}/dead").json()["dead_letters"]
    ]
    assert left == ["connect"]

    # All of them: requeued (a reserved name is dead-lettered again, as a new letter),
    # then deleted.
    assert post(web, dora, "requeue", {"all": True}).json()["count"] == 1
    wait_until(lambda: redis_client.xlen("events:dead") == 1, 10, "dead-lettered again")
    assert post(web, dora, "delete", {"all": True}).json()["count"] == 1
    assert redis_client.xlen("events:dead") == 0


def test_each_shard_shown_and_acted_on_by_its_stream(admin_env, tmp_path, processes, redis_client):
    sharded = dict(admin_env, STREAMBRIDGE_SHARDS="2")
    web = start_web(sharded, tmp_path, processes, "web")
    bridge = Bridge(sharded, tmp_path)
    processes.append(bridge)
    bridge.start()
    redis_client.xadd("events:{1}", {"channel": "connect", "body": "1"})
    wait_until(lambda: redis_client.xlen("events:{1}:dead") == 1, 10, "shard 1's dead letter")
    dora = admin(web)
    overview = dora.get(f"{web.url}{PATH}/overview", timeout=5).json()
    assert [s["stream"] for s in overview["shards"]] == ["events:{0}", "events:{1}"]
    assert overview["dead_letters"] == 1
    assert {c["state"] for s in overview["shards"] for c in s["groups"][0]["consumers"]} == {
        "alive"
    }
    [letter] = dora.get(f"{web.url}{PATH}/dead", timeout=5).json()["dead_letters"]
    assert letter["stream"] == "events:{1}"
    elsewhere = {"stream": "events:{0}", "id": letter["id"]}
    assert post(web, dora, "delete", elsewhere).status_code == 404
    assert post(web, dora, "delete", {"stream": "events", "id": letter["id"]}).status_code == 404
    assert (
        post(web, dora, "delete", {"stream": "events:{1}", "id": letter["id"]}).json()["count"] == 1
    )


def test_the_sampler_rides_out_a_redis_outage(admin_env, tmp_path, processes, clients):
    server = RedisServer(tmp_path / "redis").start()  # persistent: the login survives
    try:
        web = start_web(dict(admin_env, REDIS_URL=server.url), tmp_path, processes, "web")
        session = admin(web)
        dora = open_socket(clients, web, session)
        watch(dora)
        dora.wait_for(2, EVENT)
        server.stop()
        web.wait_log("dashboard.sample_failed")
        down = session.get(f"{web.url}{PATH}/dead", timeout=10)
        assert down.status_code == 503 and down.json()["error"].startswith("redis")
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        at_restart = len(pushes(dora))
        wait_until(lambda: len(pushes(dora)) >= at_restart + 2, 15, "pushes again")
        web.wait_log("dashboard.sampling_again")
        assert web.alive() and web.output().count("dashboard.sample_failed") == 1
    finally:
        server.stop()


def test_csrf_token_of_the_page_is_what_actions_take(web, bridge):
    dora = web.login("dora", DORA)
    del dora.headers["X-CSRFToken"]
    token = csrf_token(dora.get(f"{web.url}{PATH}", timeout=5).text)
    answer = post(web, dora, "delete", {"all": True}, **{"X-CSRFToken": token})
    assert answer.status_code == 200 and answer.json() == {"status": True, "count": 0}


def test_two_operators_requeueing_at_once_put_each_letter_back_once(web, redis_client):
    for n in range(200):
        dead_letter(redis_client, str(n))
    sessions = [admin(web), admin(web)]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda s: post(web, s, "requeue", {"all": True}).json(), sessions))
    assert sum(a["count"] for a in answers) == 200
    bodies = [fields["body"] for _, fields in redis_client.xrange("events")]
    assert sorted(bodies, key=int) == [str(n) for n in range(200)]
    assert redis_client.xlen("events:dead") == 0
    # One letter, four requests at once: one puts it back.
    target = {"stream": "events", "id": dead_letter(redis_client, '"once"')}
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda s: post(web, s, "requeue", target), sessions * 2))
    assert sorted(r.json().get("count", 0) for r in codes) == [0, 0, 0, 1]
    assert [f["body"] for _, f in redis_client.xrange("events")].count('"once"') == 1


def test_a_huge_letter_is_listed_as_a_preview(web, redis_client):
    huge = json.dumps("é" * 1_000_000)  # 2 MB of UTF-8, cut mid-character below
    dead_id = dead_letter(redis_client, huge)
    dora = admin(web)
    listed = dora.get(f"{web.url}{PATH}/dead", timeout=5)
    assert len(listed.content) < 10_000
    [shown] = listed.json()["dead_letters"]
    assert shown["truncated"] == {"body": len(huge.encode())}
    assert huge.startswith(shown["fields"]["body"]) and len(shown["fields"]["body"]) > 100
    assert shown["fields"]["channel"] == "message" and "channel" not in shown["truncated"]
    one = dora.get(
        f"{web.url}{PATH}/dead/one", params={"stream": "events", "id": dead_id}, timeout=5
    ).json()["dead_letter"]
    assert 100_000 < len(one["fields"]["body"].encode()) <= 256 * 1024
    assert one["truncated"] == {"body": len(huge.encode())}


def test_all_means_those_the_page_was_shown(web, redis_client):
    seen = dead_letter(redis_client, '"seen"')
    dora = admin(web)
    listed = dora.get(f"{web.url}{PATH}/dead", timeout=5).json()
    assert listed["through"] == {"events": seen}
    dead_letter(redis_client, '"arrived after"')
    done = post(web, dora, "delete", {"all": True, "through": listed["through"]}).json()
    assert done["count"] == 1
    [(_, left)] = redis_client.xrange("events:dead")
    assert left["body"] == '"arrived after"'
    assert post(web, dora, "delete", {"all": True, "through": {"events": "x"}}).status_code == 400
    assert post(web, dora, "delete", {"all": True, "through": {}}).json()["count"] == 0


def test_the_dashboard_benchmark_runs():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/dashboard.py"), "--quick", "--shards", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["shards"] == 2 and figures["samples_kept"] == 720
    assert figures["overview_json_bytes"] > 1000 and figures["commands_per_sample"] > 0
