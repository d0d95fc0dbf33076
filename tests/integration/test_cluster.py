"""streambridge on a real local Redis Cluster (3 masters, `redis-cli --cluster create`):
sharded streams on every master, sharded pub/sub for the queue, catch-up per shard,
and a bridge killed while it works."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests
from streambridge.webapp.app.users import UserStore

from streambridge import keys
from streambridge.contract import shard_for
from streambridge.publisher import Publisher
from streambridge.settings import ProducerSettings
from tests.support import (
    CLI,
    PASSWORDS,
    RECOVERY,
    ROOT,
    Bridge,
    Client,
    Proc,
    Web,
    all_published,
    clean_env,
    cli,
    report,
    start_together,
    wait_until,
)
from tests.support.topologies import LocalCluster

pytestmark = pytest.mark.integration

SHARDS = 4  # {0}..{3}: with the slots split in three, one shard at least on every master


def rooms_covering(shards: int) -> list[str]:
    """One team room per shard."""
    found: dict[int, str] = {}
    k = 0
    while len(found) < shards:
        found.setdefault(shard_for(f"team:{k}", shards), f"team:{k}")
        k += 1
    return [found[i] for i in range(shards)]


TEAMS = rooms_covering(SHARDS)
# Broadcasts, alice's own events and every team room: all shards get events.
ROOMS = [None, "user:alice", *TEAMS]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    local = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield local
    local.stop()


def sharded_env(url: str, tmp_path, **settings: str) -> dict[str, str]:
    """The environment of web and bridge on ``url`` with SHARDS shards; users alice and
    dora (who is in every team room)."""
    users = UserStore(tmp_path / "users.json")
    users.add("alice", PASSWORDS["alice"])
    users.add("dora", "dora-password", rooms=TEAMS)
    return clean_env(
        REDIS_URL=url,
        STREAMBRIDGE_SHARDS=str(SHARDS),
        STREAMBRIDGE_USERS_FILE=str(tmp_path / "users.json"),
        STREAMBRIDGE_SECRET_KEY="x" * 40,
        **settings,
    )


@pytest.fixture
def cluster_env(cluster, tmp_path):
    cluster.flush()
    return sharded_env(
        cluster.url,
        tmp_path,
        STREAMBRIDGE_CLAIM_IDLE_MS="2000",
        STREAMBRIDGE_LOGIN_RATE_LIMIT="10000 per minute",
    )


@pytest.fixture
def publisher(cluster):
    return Publisher(settings=ProducerSettings(redis_url=cluster.url, shards=SHARDS))


def start(processes, proc):
    processes.append(proc)
    return proc.start()


def start_web_and_bridge(processes, web: Web, bridge: Bridge) -> Web:
    processes.extend([web, bridge])
    start_together(web, bridge)
    return web


def login(web: Web, user: str):
    return web.login(user, "dora-password" if user == "dora" else None)


def connect(clients, web, user, auth=None) -> Client:
    client = Client().connect(web, login(web, user), auth=auth)
    clients.append(client)
    return client


def publish(publisher: Publisher, start: int, count: int) -> list[dict]:
    rooms = [ROOMS[n % len(ROOMS)] for n in range(start, start + count)]
    items = [
        {"channel": "tick", "body": {"n": n, "room": room}, "room": room}
        for n, room in zip(range(start, start + count), rooms, strict=True)
    ]
    publisher.publish_many(items)
    return [i["body"] for i in items]


def visible_to(user: str, bodies: list[dict]) -> list[dict]:
    mine = {None, "user:alice"} if user == "alice" else {None, *TEAMS}
    return [b for b in bodies if b["room"] in mine]


def wait_every_shard_published(cluster, timeout: float) -> None:
    """Until every shard's entries are read, published (so in their rooms' histories)
    and acked."""
    client = cluster.client()
    try:
        wait_until(
            lambda: all(all_published(client, k) for k in keys.shards("events", SHARDS)),
            timeout,
            "every shard published",
        )
    finally:
        client.close()


def ticks(client: Client) -> list[tuple[dict, dict]]:
    return [(body, meta) for _, body, meta in client.received("tick")]


def assert_room_order(pairs: list[tuple[dict, dict]]) -> None:
    """Within a room (so within a shard) events come in publish and id order."""
    by_room: dict[str | None, list[tuple[int, str]]] = {}
    for body, meta in pairs:
        assert meta["shard"] == shard_for(body["room"], SHARDS)
        by_room.setdefault(body["room"], []).append((body["n"], meta["id"]))
    for room, seen in by_room.items():
        numbers = [n for n, _ in seen]
        assert numbers == sorted(numbers), f"room {room} out of order"
        ids = [tuple(map(int, i.split("-"))) for _, i in seen]
        assert ids == sorted(ids), f"room {room}: ids out of order"


def test_shards_land_on_every_master(cluster):
    masters = {node.port for node in cluster.nodes}
    assert {cluster.port_of(key) for key in keys.shards("events", SHARDS)} == masters


def test_sharded_delivery_and_catch_up_on_a_cluster(
    cluster, cluster_env, tmp_path, processes, clients, publisher
):
    web = start_web_and_bridge(processes, Web(cluster_env, tmp_path), Bridge(cluster_env, tmp_path))
    # The web server listens with SSUBSCRIBE on the node that owns the channel's slot.
    channel_node = cluster.client().get_node_from_key("flask-socketio")
    node = cluster.client().get_redis_connection(channel_node)
    assert node.execute_command("PUBSUB", "SHARDNUMSUB", "flask-socketio")[1] == 1

    dora = connect(clients, web, "dora")
    alice = connect(clients, web, "alice")
    first = publish(publisher, 0, 600)
    wanted = visible_to("dora", first)
    dora.wait_for(len(wanted), "tick", timeout=20)
    alice.wait_for(len(visible_to("alice", first)), "tick", timeout=20)
    # Every shard, so every master, carried events.
    client = cluster.client()
    lengths = [client.xlen(k) for k in keys.shards("events", SHARDS)]
    assert all(n > 0 for n in lengths), lengths
    # Shards are delivered side by side: all of them, once, each room in order.
    assert sorted(b["n"] for b, _ in ticks(dora)) == [b["n"] for b in wanted]
    assert_room_order(ticks(dora))
    assert sorted(b["n"] for b, _ in ticks(alice)) == [b["n"] for b in visible_to("alice", first)]
    assert_room_order(ticks(alice))

    # Dora goes away; events go on in every shard; she comes back with her positions.
    at = dora.positions()
    assert set(at) == {str(i) for i in range(SHARDS)}
    dora.close()
    missed = publish(publisher, 600, 400)
    alice.wait_for(len(visible_to("alice", first + missed)), "tick", timeout=20)
    # All of it in the histories first, so all of it is replayed (none comes live).
    wait_every_shard_published(cluster, 20)
    again = connect(clients, web, "dora", auth={"positions": at})
    info = again.wait_for(1, RECOVERY)[0][1]
    expected = visible_to("dora", missed)
    again.wait_for(len(expected), "tick", timeout=20)
    assert info["recovered"] is True and info["replayed"] == len(expected)
    got = ticks(again)
    assert sorted(b["n"] for b, _ in got) == [b["n"] for b in expected]  # no repeats
    assert all(meta["replayed"] for _, meta in got)
    assert_room_order(got)
    # The operator's view: one entry per shard, with the node that holds it.
    out = cli(cluster_env, "status", "--json", check=True)
    status = json.loads(out.stdout)["shards"]
    assert [s["stream"] for s in status] == keys.shards("events", SHARDS)
    assert {int(s["node"].rsplit(":", 1)[1]) for s in status} == {n.port for n in cluster.nodes}
    assert all(s["groups"][0]["lag"] == 0 for s in status)
    check = cli(cluster_env, "bridge", "--check", "--consumer", "bridge")
    assert check.returncode == 0, check.stdout
    report(
        f"cluster: {SHARDS} shards on 3 masters, entries per shard {lengths}; "
        f"dora caught up {info['replayed']} events across shards"
    )


def test_bridge_killed_on_a_cluster_loses_nothing(
    cluster, cluster_env, tmp_path, processes, clients, publisher
):
    bridge = Bridge(cluster_env, tmp_path, name="bridge-k")
    web = start_web_and_bridge(processes, Web(cluster_env, tmp_path), bridge)
    dora = connect(clients, web, "dora")
    produced: list[dict] = []

    def produce() -> None:
        for chunk in range(30):  # 3,000 events, about 1,000/s
            produced.extend(publish(publisher, chunk * 100, 100))
            time.sleep(0.1)  # pacing the producer

    producer = threading.Thread(target=produce)
    producer.start()
    for n in (1, 2):
        wait_until(lambda n=n: len(produced) >= n * 1_000, 20, "events produced")
        bridge.process.send_signal(signal.SIGKILL)
        bridge.process.wait(5)
        bridge.start(wait=False)  # same consumer name: its own pending entries first
    producer.join(30)
    wanted = visible_to("dora", produced)
    wait_until(lambda: len({b["n"] for b, _ in ticks(dora)}) >= len(wanted), 30, "every event")
    got = ticks(dora)
    first_seen, seen = [], set()
    for body, meta in got:  # a repeat (published, killed before its ack) is dropped
        if (meta["shard"], meta["id"]) not in seen:
            seen.add((meta["shard"], meta["id"]))
            first_seen.append((body, meta))
    assert sorted(b["n"] for b, _ in first_seen) == [b["n"] for b in wanted]
    assert_room_order(first_seen)
    wait_every_shard_published(cluster, 10)
    report(
        f"cluster: bridge SIGKILLed twice during 3,000 events over {SHARDS} shards: "
        f"{len(wanted)} delivered, {len(got) - len(first_seen)} repeats (deduplicated by id)"
    )


@pytest.mark.parametrize("producer", ["cli", "node", "shell"])
def test_every_example_producer_picks_the_shard_of_the_room(cluster, cluster_env, producer):
    """Producers in other languages compute the same shard as publish() does."""
    node_url = f"redis://127.0.0.1:{cluster.nodes[0].port}/0"  # one node: they follow MOVED
    env = dict(cluster_env, REDIS_URL=node_url, STREAMBRIDGE_CLUSTER="1")
    command = {
        "cli": [*CLI, "publish"],
        "node": [shutil.which("node") or "node", "producers/examples/node/producer.mjs"],
        "shell": ["sh", "producers/examples/cron_publish.sh"],
    }[producer]
    client = cluster.client()
    for room in [*TEAMS, "user:alice", "user:émile", ""]:
        args = ["message", '"hi"', *(["--room", room] if producer == "cli" else [room])]
        if producer == "cli" and not room:
            args = args[:2]
        out = subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=30
        )
        assert out.returncode == 0, out.stderr
        stream_id = out.stdout.strip().splitlines()[-1]
        key = keys.shard("events", shard_for(room or None, SHARDS), SHARDS)
        assert client.xrange(key, stream_id, stream_id), (room, key)


def test_a_shard_resharded_to_another_master_mid_run(cluster, cluster_env, tmp_path, processes,
                                                    clients, publisher):  # fmt: skip
    """A shard's slot (its stream, histories and queue channel) moves to another master
    while events flow, keys and all, as an operator's reshard does: Redis ends the web
    server's subscription (SUNSUBSCRIBE) and redirects the bridge's script. Both find
    the new node; the client misses nothing, and a reconnect recovers from there."""
    web = start_web_and_bridge(processes, Web(cluster_env, tmp_path), Bridge(cluster_env, tmp_path))
    dora = connect(clients, web, "dora")
    first = publish(publisher, 0, 300)
    dora.wait_for(len(visible_to("dora", first)), "tick", timeout=20)
    stream = keys.shard("events", 0, SHARDS)
    channel = keys.stream_channel("flask-socketio", stream)
    before = cluster.port_of(stream)
    target = next(n.port for n in cluster.nodes if n.port != before)
    mark = len(web.output())
    cluster.move_slot(stream, target)
    web.wait_log('"queue.subscribed"', after=mark)
    second = publish(publisher, 300, 300)
    wanted = visible_to("dora", first + second)
    wait_until(lambda: len({b["n"] for b, _ in ticks(dora)}) >= len(wanted), 30, "every event")
    assert sorted({b["n"] for b, _ in ticks(dora)}) == [b["n"] for b in wanted]
    assert cluster.port_of(stream) == target == cluster.port_of(channel)
    node = next(n for n in cluster.nodes if n.port == target).client()
    assert node.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1
    assert node.exists(stream, keys.history_clock(stream))
    assert dora.sio.connected
    assert '"queue.disconnected"' in web.output()
    # Offline now: what it misses is recovered from the shard's new master.
    at = dora.positions()
    dora.close()
    third = publish(publisher, 600, 200)
    wait_every_shard_published(cluster, 20)
    again = connect(clients, web, "dora", auth={"positions": at})
    [(_, info, _)] = again.wait_for(1, RECOVERY)
    assert (info["recovered"], info["replayed"]) == (True, len(visible_to("dora", third)))
    assert sorted(b["n"] for b, _ in ticks(again)) == [b["n"] for b in visible_to("dora", third)]
    report(
        f"cluster: shard 0 resharded from :{before} to :{target} mid-run; web re-subscribed, "
        f"bridge followed, {len(wanted)} events all delivered"
    )


def test_dead_letters_stay_in_their_shard_and_requeue_there(cluster, cluster_env, tmp_path,
                                                              processes):  # fmt: skip
    """A bad entry in one shard is dead-lettered next to it (same slot) and requeued into
    the same shard, in one MULTI."""
    bridge = start(processes, Bridge(cluster_env, tmp_path))
    client = cluster.client()
    shard_key = keys.shard("events", 3, SHARDS)
    bad_id = client.xadd(shard_key, {"channel": "bad channel!", "body": '"x"'})
    dead_key = keys.dead(shard_key)
    wait_until(lambda: client.exists(dead_key) and client.xlen(dead_key) == 1, 10, "dead letter")

    [letter] = json.loads(cli(cluster_env, "dead", "list", "--json").stdout)
    assert (letter["stream"], letter["original_id"]) == (shard_key, bad_id)
    bridge.terminate()  # so the requeued entry stays in the stream to be looked at
    out = cli(cluster_env, "dead", "requeue", letter["id"])
    assert out.returncode == 0, out.stderr
    assert client.xlen(dead_key) == 0
    [(_, fields)] = client.xrange(shard_key, f"({bad_id}", "+")
    assert fields["channel"] == "bad channel!"
    assert (
        cli(cluster_env, "dead", "requeue", "1-1").returncode == 1
    )  # unknown id: an error, not silence


def test_a_cluster_with_a_password_end_to_end(tmp_path, processes, clients):
    """Every part on a cluster that requires a password: web (its pool, queue and rate
    limiter), bridge, and the Node producer that reaches every node with it."""
    secured = LocalCluster(tmp_path / "secured", password="s3cret-Pw").start()
    try:
        env = sharded_env(secured.url, tmp_path, STREAMBRIDGE_LOGIN_RATE_LIMIT="100 per minute")
        web = start_web_and_bridge(processes, Web(env, tmp_path), Bridge(env, tmp_path))
        alice = connect(clients, web, "alice")
        node_url = f"redis://:s3cret-Pw@127.0.0.1:{secured.nodes[1].port}/0"
        for room in ("user:alice", ""):  # alice's shard and shard 0
            out = subprocess.run(
                [shutil.which("node") or "node", "producers/examples/node/producer.mjs",
                 "message", json.dumps(room or "all"), room],
                env=dict(env, REDIS_URL=node_url, STREAMBRIDGE_CLUSTER="1"),
                capture_output=True, text=True, cwd=ROOT, timeout=30,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
        got = alice.wait_for(2, "message", timeout=20)
        assert sorted(body for _, body, _ in got) == ["all", "user:alice"]
        client = secured.client()
        assert any(k.startswith("LIMITS:") for k in client.scan_iter("*"))  # rate limits too
        assert "s3cret-Pw" not in web.output() + processes[-1].output()
    finally:
        secured.stop()


def test_web_and_bridge_started_before_the_cluster_wait_for_it(tmp_path, processes, clients,
                                                                publisher):  # fmt: skip
    """Nothing listens yet at the cluster's addresses: neither process dies; both come
    up once the cluster does (also the rate limiter, built on first use)."""
    later = LocalCluster(tmp_path / "later")  # ports chosen, servers not started
    env = sharded_env(later.url, tmp_path, STREAMBRIDGE_QUEUE_READY_TIMEOUT_S="0.5")
    web, bridge = Web(env, tmp_path), Bridge(env, tmp_path)
    processes.extend([web, bridge])
    Proc.start(web)  # no wait for health: it cannot be healthy yet
    bridge.start(wait=False)
    try:
        web.wait_log('"web.waiting_for_queue"')
        bridge.wait_log('"bridge.redis_unavailable"')
        later.start()
        bridge.wait_log('"bridge.all_ready"', timeout=30)
        wait_until(lambda: _ready(web), 30, "web ready")
        alice = connect(clients, web, "alice")
        Publisher(settings=ProducerSettings(redis_url=later.url, shards=SHARDS)).publish(
            "message", "late", room="user:alice"
        )
        [(_, body, _)] = alice.wait_for(1, "message", timeout=20)
        assert body == "late"
    finally:
        later.stop()


def _ready(web: Web) -> bool:
    try:
        return requests.get(web.url + "/readyz", timeout=1).ok
    except requests.RequestException:
        return False


def test_a_retried_publish_is_delivered_once_on_a_cluster(
    cluster, cluster_env, tmp_path, processes, clients, publisher
):
    """The idempotency key lives in its shard's slot: the publish script and the bridge's
    script reach it on whichever master holds the room's shard."""
    web = start_web_and_bridge(processes, Web(cluster_env, tmp_path), Bridge(cluster_env, tmp_path))
    dora = connect(clients, web, "dora")
    rooms = ["user:dora", None]  # two shards (by room)
    ids = {}
    for n, room in enumerate(rooms):
        for _ in range(2):
            ids.setdefault(n, set()).add(
                publisher.publish("tick", {"n": n}, room, idempotency_key=f"once-{n}")
            )
        # A producer in another language: the field, twice, straight to the shard.
        shard = keys.shard("events", shard_for(room, SHARDS), SHARDS)
        fields = {"channel": "tick", "body": json.dumps({"n": 10 + n}), "idempotency_key": "raw"}
        if room is not None:
            fields["room"] = room
        for _ in range(2):
            cluster.client().xadd(shard, fields)
    assert all(len(i) == 1 for i in ids.values())
    client = cluster.client()

    def repeats() -> int:
        clocks = [keys.history_clock(k) for k in keys.shards("events", SHARDS)]
        return sum(int(client.hget(c, "repeats") or 0) for c in clocks)

    # The raw second copies come after everything else of their shard.
    wait_until(lambda: repeats() == 2, 20, "both raw repeats acked")
    dora.wait_for(4, "tick", timeout=20)
    assert sorted(b["n"] for b, _ in ticks(dora)) == [0, 1, 10, 11]
