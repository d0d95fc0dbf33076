"""Retry-safe producers: an event published twice with the same idempotency key in one
room is delivered once, live and in catch-up, whoever retries and whatever crashes
between the two copies. Real redis-server, bridge and web processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest
import requests

from streambridge import keys
from streambridge.publisher import Publisher
from streambridge.settings import ProducerSettings
from tests.support import (
    RECOVERY,
    ROOT,
    Bridge,
    all_published,
    cli,
    open_socket,
    report,
    wait_until,
)

pytestmark = pytest.mark.integration


def connected(clients, web, user="alice", **kwargs):
    client = open_socket(clients, web, web.login(user), **kwargs)
    client.wait_for(1, RECOVERY)
    return client


def publisher(redis_server, **settings) -> Publisher:
    return Publisher(settings=ProducerSettings(redis_url=redis_server.url, **settings))


def raw_xadd(redis_client, n: int, key: str, room: str = "user:alice") -> str:
    """What a producer in any language writes (no script): the key is a field."""
    fields = {"channel": "tick", "body": json.dumps({"n": n}), "room": room}
    return redis_client.xadd("events", {**fields, "idempotency_key": key})


def test_a_retried_publish_answers_the_first_id_and_is_delivered_once(
    web, bridge, clients, redis_client, redis_server
):
    alice = connected(clients, web)
    pub = publisher(redis_server)
    first = pub.publish("tick", {"n": 1}, "user:alice", idempotency_key="job-1")
    again = pub.publish("tick", {"n": 1}, "user:alice", idempotency_key="job-1")
    other_room = pub.publish("tick", {"n": 1}, "team:blue", idempotency_key="job-1")
    assert again == first != other_room  # the key is per room
    pub.publish("tick", {"n": 2}, "user:alice")
    alice.wait_for(2, "tick")
    wait_until(lambda: all_published(redis_client), 10, "acks")
    assert alice.bodies("tick") == [{"n": 1}, {"n": 2}]
    assert redis_client.xlen("events") == 3  # the repeat appended nothing


def test_each_event_shown_once_when_every_xadd_is_sent_twice_and_a_bridge_dies_between(
    env, tmp_path, processes, web, clients, redis_client
):
    """A producer that retries every XADD (its first timed out, say), under load, with
    one bridge SIGKILLed between the two copies of an event and the other taking over."""
    alice = connected(clients, web)
    a, b = Bridge(env, tmp_path, name="bridge-a"), Bridge(env, tmp_path, name="bridge-b")
    processes.extend([a, b])
    a.start()
    # The first copy of event 0 published by bridge-a alone, then bridge-a dies.
    raw_xadd(redis_client, 0, "k-0")
    alice.wait_for(1, "tick")
    wait_until(lambda: all_published(redis_client), 10, "event 0 acked by bridge-a")
    a.kill()
    b.start()
    raw_xadd(redis_client, 0, "k-0")  # its second copy: bridge-b's
    total = 400
    stop = threading.Event()

    def produce() -> None:
        for n in range(1, total):
            raw_xadd(redis_client, n, f"k-{n}")
            raw_xadd(redis_client, n, f"k-{n}")  # the retry
            stop.wait(0.002)  # about 250 events (500 entries) a second

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: len(alice.received("tick")) >= 100, 20, "events under way")
    b.kill()  # mid-run: its pending entries go to the next bridge
    c = Bridge(env, tmp_path, name="bridge-c")
    processes.append(c)
    c.start()
    producer.join(30)
    wait_until(lambda: all_published(redis_client), 30, "every copy acked")
    alice.wait_for(total, "tick", timeout=20)
    got = [body["n"] for body in alice.bodies("tick")]
    assert got == list(range(total))  # each once, in order, none lost
    status = json.loads(cli(env, "status", "--json", check=True).stdout)
    assert status["repeats"] == total
    assert redis_client.xlen("events") == 2 * total
    report(
        f"idempotency: {2 * total} XADDs ({total} events, each sent twice), bridges "
        f"SIGKILLed twice (once between an event's two copies): {len(got)} shown, each "
        f"once; {status['repeats']} repeats acked"
    )


def test_catch_up_replays_an_event_once_however_often_it_was_sent(
    web, bridge, clients, redis_client
):
    alice = connected(clients, web)
    raw_xadd(redis_client, 0, "k-0")
    alice.wait_for(1, "tick")
    at = alice.positions()
    alice.close()
    for n in (1, 2):
        for _ in range(3):
            raw_xadd(redis_client, n, f"k-{n}")
    wait_until(lambda: all_published(redis_client), 10, "acks")
    again = connected(clients, web, auth={"positions": at})
    again.wait_for(2, "tick")
    assert again.bodies("tick") == [{"n": 1}, {"n": 2}]
    assert all(meta["replayed"] for _, _, meta in again.received("tick"))


def test_the_window_lets_a_key_be_used_again_once_it_is_over(
    env, tmp_path, processes, web, clients, redis_client, redis_server
):
    window = {"STREAMBRIDGE_IDEMPOTENCY_WINDOW_S": "1"}
    bridge = Bridge(dict(env, **window), tmp_path, name="short-window")
    processes.append(bridge)
    bridge.start()
    alice = connected(clients, web)
    pub = publisher(redis_server, idempotency_window_s=1)
    first = pub.publish("tick", {"n": 1}, "user:alice", idempotency_key="nightly")
    assert pub.publish("tick", {"n": 1}, "user:alice", idempotency_key="nightly") == first
    key = keys.idempotency("events", "/", "user:alice", None, "nightly")
    wait_until(lambda: not redis_client.exists(key), 5, "the window to end")
    later = pub.publish("tick", {"n": 2}, "user:alice", idempotency_key="nightly")
    assert later != first
    alice.wait_for(2, "tick")
    assert alice.bodies("tick") == [{"n": 1}, {"n": 2}]


def test_the_api_and_the_cli_answer_a_repeat_with_the_first_id(
    env, web, bridge, clients, redis_client
):
    alice = connected(clients, web)
    session = web.login("alice")

    def post(body, key):
        return session.post(
            f"{web.url}/api/",
            json={"channel": "tick", "body": body, "room": "user:alice"},
            headers={"Idempotency-Key": key},
            timeout=5,
        )

    first = post({"n": 1}, "form-42")
    assert first.status_code == 200
    assert post({"n": 1}, "form-42").json()["id"] == first.json()["id"]
    # Another user's key is another key: bob's event is not taken for alice's.
    bob = web.login("bob")
    theirs = bob.post(
        f"{web.url}/api/",
        json={"channel": "tick", "body": {"n": "bob"}, "room": "user:bob"},
        headers={"Idempotency-Key": "form-42"},
        timeout=5,
    )
    mine_to_all = post({"n": "all"}, "same-key")
    bobs_to_all = bob.post(
        f"{web.url}/api/",
        json={"channel": "tick", "body": {"n": "bob all"}},
        headers={"Idempotency-Key": "same-key"},
        timeout=5,
    )
    assert theirs.status_code == bobs_to_all.status_code == 200
    assert bobs_to_all.json()["id"] != mine_to_all.json()["id"]
    assert post({"n": 1}, "bad key").status_code == 400  # spaces are not printable ASCII
    assert requests.post(f"{web.url}/api/", timeout=5).status_code == 401
    args = ("publish", "tick", '{"n": 2}', "--room", "user:alice", "--key", "cron-7")
    ids = {cli(env, *args, check=True).stdout.strip() for _ in range(2)}
    assert len(ids) == 1
    alice.wait_for(4, "tick")
    wait_until(lambda: all_published(redis_client), 10, "acks")
    bodies = alice.bodies("tick")
    assert bodies == [{"n": 1}, {"n": "all"}, {"n": "bob all"}, {"n": 2}]


def test_the_node_and_shell_examples_retry_safely(env, web, bridge, clients, redis_client):
    alice = connected(clients, web)
    node = shutil.which("node")
    assert node, "node is not installed: run scripts/setup.sh --test"
    examples = {
        "node": [node, "producers/examples/node/producer.mjs"],
        "shell": ["sh", "producers/examples/cron_publish.sh"],
    }
    for name, command in examples.items():
        for _ in range(2):  # the same run twice: a retry
            subprocess.run(
                [*command, "tick", json.dumps({"from": name}), "user:alice"],
                env=dict(env, IDEMPOTENCY_KEY=f"{name}-run-1"),
                cwd=ROOT, check=True, capture_output=True, timeout=30,
            )  # fmt: skip
    wait_until(lambda: all_published(redis_client), 10, "acks")
    alice.wait_for(2, "tick")
    assert alice.bodies("tick") == [{"from": "node"}, {"from": "shell"}]
    assert redis_client.xlen("events") == 4
