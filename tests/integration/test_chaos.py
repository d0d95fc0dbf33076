"""Chaos: two bridges, two web servers and Redis (``appendfsync always``) are SIGKILLed
at random while a producer publishes and clients come and go, reconnecting with their
positions as /streambridge.js does. Every client ends with every event its user may see,
nothing of anyone else's, each once."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from streambridge.embedded_redis import RedisServer
from streambridge.ids import StreamId
from tests.support import (
    RECOVERY,
    Bridge,
    Client,
    Web,
    all_published,
    clean_env,
    report,
    start_together,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOMS = [None, "user:alice", "user:bob", "user:carol", "team:blue"]
VISIBLE = {
    "alice": {None, "user:alice"},
    "bob": {None, "user:bob"},
    "carol": {None, "user:carol", "team:blue"},  # granted team:blue in the users file
}
SECONDS = 24
RATE = 150  # events per second


class Producer(threading.Thread):
    """XADDs numbered events to random rooms. After an error it checks whether its
    last XADD was stored before it sends it again (so each number is one entry)."""

    def __init__(self, url: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.rng = rng
        self.stop = threading.Event()
        self.sent: dict[int, str | None] = {}  # n -> room
        self.retries = 0
        self.unconfirmed: tuple[int, str | None] | None = None

    def confirm(self) -> None:
        """Once Redis is back: whether the XADD that was cut short was stored after all."""
        if self.unconfirmed is not None:
            n, room = self.unconfirmed
            if self._stored(redis.Redis.from_url(self.url, decode_responses=True), n):
                self.sent[n] = room

    def run(self) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)
        n = 0
        while not self.stop.is_set():
            room = self.rng.choice(ROOMS)
            fields = {"channel": "tick", "body": f'{{"n":{n}}}'}
            if room is not None:
                fields["room"] = room
            stored = False
            while not stored and not self.stop.is_set():
                try:
                    if not self.retries or not self._stored(client, n):
                        client.xadd("events", fields)
                    stored = True
                except redis.RedisError:
                    self.retries += 1
                    self.stop.wait(0.1)
            if not stored:
                self.unconfirmed = (n, room)  # stopped while Redis was down
                break
            self.sent[n] = room
            n += 1
            self.stop.wait(1 / RATE)

    @staticmethod
    def _stored(client: redis.Redis, n: int) -> bool:
        return any(f.get("body") == f'{{"n":{n}}}' for _, f in client.xrevrange("events", count=20))


@dataclass
class Page:
    """One browser tab: reconnects with its positions, drops repeats by id."""

    user: str
    webs: list[Web]
    rng: random.Random
    positions: dict[str, dict[str, str]] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    delivered: list[tuple[int, Any, StreamId]] = field(default_factory=list)
    repeats: int = 0
    connections: int = 0
    recoveries: list[dict] = field(default_factory=list)

    def connect(self) -> Client | None:
        web = self.rng.choice([w for w in self.webs if w.alive()] or self.webs)
        client = Client()
        try:
            client.connect(web, web.login(self.user), auth={"positions": dict(self.positions)})
        except Exception:
            client.close()
            return None
        self.connections += 1
        return client

    def take(self, client: Client) -> None:
        """What the page does with each event of a connection, in arrival order."""
        for event, body, meta in client.received():
            if event == RECOVERY:
                self.recoveries.append(body)
                for shard, at in body.get("positions", {}).items():
                    self._advance(shard, at["last_id"], at["epoch"], replace=not body["recovered"])
                continue
            key = (str(meta.get("shard", 0)), meta["id"])
            if key in self.seen:
                self.repeats += 1
                continue
            self.seen.add(key)
            self.delivered.append((body["n"], meta["entry"], StreamId.parse(meta["id"])))
            self._advance(key[0], meta["id"], meta["epoch"])

    def _advance(self, shard: str, last_id: str, epoch: str, replace: bool = False) -> None:
        at = self.positions.get(shard)
        if replace or at is None or StreamId.parse(last_id) > StreamId.parse(at["last_id"]):
            self.positions[shard] = {"last_id": last_id, "epoch": epoch}


def wander(page: Page, stop: threading.Event) -> None:
    """Connect, stay a while (or until the server goes), leave, come back."""
    while not stop.is_set():
        client = page.connect()
        if client is None:
            stop.wait(0.2)
            continue
        until = time.monotonic() + page.rng.uniform(0.5, 3.0)
        while client.sio.connected and time.monotonic() < until and not stop.is_set():
            time.sleep(0.05)
        client.close()
        page.take(client)


def test_chaos_loses_nothing_and_leaks_nothing(tmp_path, users_file):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    env = clean_env(
        REDIS_URL=server.url,
        STREAMBRIDGE_USERS_FILE=str(users_file),
        STREAMBRIDGE_SECRET_KEY="x" * 40,
        STREAMBRIDGE_CLAIM_IDLE_MS="1000",
        STREAMBRIDGE_LOGIN_RATE_LIMIT="",
    )
    bridges = [Bridge(env, tmp_path, name=f"bridge-{i}") for i in range(2)]
    webs = [Web(env, tmp_path, name=f"web-{i}") for i in range(2)]
    start_together(*bridges, *webs)
    pages = [
        Page(u, webs, random.Random(rng.random()))
        for u in ("alice", "alice", "bob", "carol", "carol")
    ]
    stop = threading.Event()
    wanderers = [threading.Thread(target=wander, args=(p, stop), daemon=True) for p in pages]
    producer = Producer(server.url, random.Random(rng.random()))
    kills = {"bridge": 0, "web": 0, "redis": 0}
    try:
        for thread in wanderers:
            thread.start()
        # A page that never connected starts at "now": start producing once all have.
        wait_until(lambda: all(p.connections for p in pages), 20, "every page connected")
        producer.start()
        # Every kind of victim at least twice, in a random order, one at a time.
        victims = ["bridge", "web", "redis"] * 2 + [rng.choice(["bridge", "web", "redis"])] * 2
        rng.shuffle(victims)
        ends = time.monotonic() + SECONDS
        for victim in victims:
            time.sleep(max(0.0, min(rng.uniform(1.0, 2.5), ends - time.monotonic())))
            kills[victim] += 1
            if victim == "redis":
                server.kill()
                time.sleep(rng.uniform(0.2, 1.0))
                server.start()
            else:
                proc = rng.choice(bridges if victim == "bridge" else webs)
                proc.kill()
                time.sleep(rng.uniform(0.2, 1.0))
                proc.start()
        producer.stop.set()
        producer.join(10)
        producer.confirm()
        stop.set()
        for thread in wanderers:
            thread.join(10)
        check = server.client()
        wait_until(lambda: all_published(check), 60, f"bridges done (seed {seed})")

        # Back once more, now that nothing moves: the last recovery covers everything.
        for page in pages:
            client = page.connect()
            assert client is not None
            wait_until(lambda c=client: c.received(RECOVERY), 30, f"recovery (seed {seed})")
            client.close()
            page.take(client)

        produced = producer.sent
        for page in pages:
            mine = {n for n, room in produced.items() if room in VISIBLE[page.user]}
            got = [n for n, _, _ in page.delivered]
            assert set(got) - set(produced) == set()
            assert {n for n in got if produced[n] not in VISIBLE[page.user]} == set(), "leaked"
            assert set(got) == mine, f"lost {sorted(mine - set(got))[:10]} (seed {seed})"
            assert len(got) == len(set(got)), f"an event shown twice (seed {seed})"
            order = [p for _, _, p in page.delivered]
            assert order == sorted(order), f"an event overtook another (seed {seed})"
            assert all(r["recovered"] for r in page.recoveries), page.recoveries
        report(
            f"chaos (seed {seed}): {len(produced)} events in {SECONDS} s, SIGKILLs: "
            f"{kills['bridge']} bridge, {kills['web']} web, {kills['redis']} Redis "
            f"(appendfsync always); {len(pages)} pages, "
            f"{sum(p.connections for p in pages)} connections, "
            f"{sum(len(p.recoveries) for p in pages)} recoveries (all complete); "
            f"lost 0, leaked 0, shown twice 0; {sum(p.repeats for p in pages)} redeliveries "
            f"dropped by id; {producer.retries} producer retries"
        )
    finally:
        producer.stop.set()
        stop.set()
        for proc in (*bridges, *webs):
            proc.kill()
        server.stop()
