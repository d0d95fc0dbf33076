"""streambridge on Redis Sentinel (1 master, 1 replica, 3 Sentinels): the master is
SIGKILLed while events flow; the system follows the failover by itself."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from streambridge.publisher import Publisher
from streambridge.settings import ProducerSettings
from tests.support import Bridge, Client, Web, clean_env, report, start_together, wait_until
from tests.support.topologies import LocalSentinel

pytestmark = pytest.mark.integration

RATE = 200  # events per second
BEFORE, AFTER = 400, 400  # acknowledged events before the kill, after the failover


@pytest.fixture
def sentinel_set(tmp_path):
    local = LocalSentinel(tmp_path / "sentinel").start()
    yield local
    local.stop()


class Producer:
    """Publishes numbered events for alice at RATE/s; a failed XADD is retried with the
    same number (it may or may not have been applied: at-least-once)."""

    def __init__(self, url: str) -> None:
        self.publisher = Publisher(settings=ProducerSettings(redis_url=url))
        self.acked: list[tuple[int, float]] = []  # (n, when XADD answered)
        self.errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            try:
                self.publisher.publish("tick", {"n": n}, room="user:alice")
            except redis.RedisError:
                self.errors += 1
                self.stopping.wait(0.05)  # back off, then the same event again
                continue
            self.acked.append((n, time.monotonic()))
            n += 1
            self.stopping.wait(1 / RATE)  # pacing the producer

    def count(self) -> int:
        return len(self.acked)


def test_sentinel_failover_mid_run(sentinel_set, users_file, tmp_path, processes, clients):
    env = clean_env(
        REDIS_URL=sentinel_set.url,
        STREAMBRIDGE_USERS_FILE=str(users_file),
        STREAMBRIDGE_SECRET_KEY="x" * 40,
        STREAMBRIDGE_LOGIN_RATE_LIMIT="10000 per minute",
        STREAMBRIDGE_BACKOFF_MAX_S="1",
    )
    web, bridge = Web(env, tmp_path), Bridge(env, tmp_path)
    processes.extend([web, bridge])
    start_together(web, bridge)
    pids = (web.process.pid, bridge.process.pid)
    alice = Client().connect(web, web.login("alice"))
    clients.append(alice)

    producer = Producer(sentinel_set.url)
    producer.thread.start()
    try:
        wait_until(lambda: producer.count() >= BEFORE, 20, "events before the kill")
        old = sentinel_set.master_port()
        killed_at = time.monotonic()
        sentinel_set.master.kill()
        new = sentinel_set.wait_failover(old)
        failed_over_at = time.monotonic()
        after = producer.count()
        wait_until(lambda: producer.count() >= after + AFTER, 30, "events after the failover")
    finally:
        producer.stopping.set()
        producer.thread.join(10)

    # What the new master has: Redis replicates asynchronously, so an XADD the old
    # master acknowledged just before it died may never have reached the replica.
    survivor = redis.Redis(port=new, decode_responses=True)
    in_stream = {
        json.loads(f["body"])["n"]
        for _, f in survivor.xrange("events")
        if f.get("channel") == "tick"
    }
    acked = [n for n, _ in producer.acked]
    lost = sorted(set(acked) - in_stream)

    def received() -> set[int]:
        return {body["n"] for _, body, _ in alice.received("tick")}

    # The guarantee: every event in the stream reaches the client that stayed connected,
    # including everything published after the failover.
    wait_until(lambda: in_stream <= received(), 30, "every stored event delivered")
    after_failover = [n for n, t in producer.acked if t > failed_over_at]
    assert len(after_failover) >= AFTER
    assert set(after_failover) <= received()
    assert alice.sio.connected, "the client never had to reconnect"
    assert (web.process.pid, bridge.process.pid) == pids and web.alive() and bridge.alive()
    assert survivor.xpending("events", "bridge")["pending"] == 0
    # Whatever was lost can only be from the last moments before the kill.
    assert len(lost) < 50, lost
    recoveries = [info for _, info, _ in alice.received("streambridge:recovery")][1:]
    report(
        f"sentinel failover: master SIGKILLed after {BEFORE} events at {RATE}/s, new master "
        f"in {failed_over_at - killed_at:.1f}s; {len(acked)} acknowledged XADDs, "
        f"{len(lost)} lost by the failover {lost[:5]}, producer retried {producer.errors} "
        f"times; client stayed connected, got all {len(in_stream)} stored events; "
        f"re-sync notices: {[r.get('reason') for r in recoveries]}"
    )


def test_sentinels_and_master_with_their_own_passwords(tmp_path):
    """The master's password goes to the master only; the Sentinels' own password (they
    refuse anyone without it) comes from the URL's query (``sentinel_password``):
    streambridge's clients and the rate limiter's storage both reach the master."""
    from limits.storage import storage_from_string

    from streambridge.redis_conn import connect, limiter_storage

    local = LocalSentinel(
        tmp_path / "secured", password="master-Pw", sentinel_password="sentinel-Pw"
    ).start()
    try:
        url = local.url
        assert connect(url).set("k", "v") and connect(url).get("k") == "v"
        uri, options = limiter_storage(url)
        storage = storage_from_string(uri, **options)
        assert storage.check()
        assert storage.incr("streambridge-test", 60) == 1
    finally:
        local.stop()
