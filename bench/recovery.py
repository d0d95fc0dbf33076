"""Catch-up and per-room history figures, on this machine.

    .venv/bin/python bench/recovery.py            # full run (a few minutes)
    .venv/bin/python bench/recovery.py --quick    # a short smoke run of every phase

One private redis-server (AOF, everysec), the real `streambridge web` and `bridge`
processes, Node socket.io clients (bench/storm.mjs) for the storm:

* catch-up time of a client with 5 missed events of its own while 10k, 100k and 1M
  events went to others: from opening the WebSocket to the recovery notice (all five
  events before it), from the Socket.IO connection being accepted to that notice, and
  the history read alone (medians of 7);
* a storm of 1,000 clients (500 users) reconnecting at once after a web restart, each
  with 2 missed events among 100k for others: recovered exactly? how fast? Redis
  commands and web CPU per reconnect;
* the bridge's throughput with per-room history against the same loop publishing
  without it (PUBLISH + XACK pipelined), in the same run;
* Redis memory per room and per event of history, for 200-byte bodies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from streambridge.bridge.daemon import Bridge as BridgeLoop  # noqa: E402
from streambridge.bridge.daemon import _entries  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from bench.run import cpu_seconds, node_script  # noqa: E402
from streambridge import history, keys  # noqa: E402
from streambridge.contract import Event  # noqa: E402
from streambridge.embedded_redis import RedisServer  # noqa: E402
from streambridge.publisher import Publisher  # noqa: E402
from streambridge.queue import emit_message  # noqa: E402
from streambridge.settings import BridgeSettings, ProducerSettings  # noqa: E402
from tests.support import (  # noqa: E402
    RECOVERY,
    Bridge,
    Client,
    Web,
    all_published,
    clean_env,
    wait_until,
)

CHANNEL = "bench"
PASSWORD = "pw"  # noqa: S105 - throwaway users of a private server
BODY_200 = {"text": "x" * 186}  # 200 bytes of JSON


def commands(client: redis.Redis) -> int:
    return sum(v["calls"] for v in client.info("commandstats").values())


class Setup:
    def __init__(self, tmp: Path, users: int) -> None:
        self.tmp = tmp
        self.server = RedisServer(tmp / "redis", appendfsync="everysec").start()
        self.redis = self.server.client()
        users_file = tmp / "users.json"
        cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
        users_file.write_text(json.dumps({f"u{i}": cheap for i in range(users)}))
        self.env = clean_env(
            REDIS_URL=self.server.url,
            STREAMBRIDGE_USERS_FILE=str(users_file),
            STREAMBRIDGE_SECRET_KEY="b" * 40,
            STREAMBRIDGE_LOGIN_RATE_LIMIT="",
            STREAMBRIDGE_MAX_CONNECTIONS_PER_ADDRESS="0",
            STREAMBRIDGE_MAX_UNFINISHED_PER_ADDRESS="0",
            STREAMBRIDGE_MAX_CONNECTIONS="5000",
        )
        self.web: Web | None = None
        self.bridge: Bridge | None = None
        try:  # what started is stopped if the rest does not start
            self.web = Web(self.env, tmp, name="web").start()
            self.bridge = Bridge(self.env, tmp, name="bridge").start()
        except BaseException:
            self.stop()
            raise
        self.publisher = Publisher(
            self.redis, ProducerSettings(redis_url=self.server.url, maxlen=2_000_000)
        )

    def publish_to_others(self, n: int, rooms: int = 1000, chunk: int = 20_000) -> None:
        for start in range(0, n, chunk):
            self.publisher.publish_events(
                [
                    Event.build(CHANNEL, BODY_200, room=f"user:other{i % rooms}")
                    for i in range(start, min(n, start + chunk))
                ]
            )

    def drained(self, timeout: float = 600) -> None:
        wait_until(lambda: all_published(self.redis), timeout, "the bridge")

    def stop(self) -> None:
        for proc in (self.bridge, self.web):
            if proc is not None:
                proc.kill()
        self.server.stop()


# -- catch-up time against others' traffic --------------------------------------------
class TimedClient(Client):
    """Notes when its Socket.IO connection was accepted and when each event arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, float] = {}
        self.sio.on("connect", lambda: self.times.setdefault("connect", time.perf_counter()))

    def _record(self, event: str, *args: Any) -> None:
        self.times.setdefault(event, time.perf_counter())
        super()._record(event, *args)


def phase_flat(setup: Setup, sizes: list[int]) -> list[dict[str, Any]]:
    session = setup.web.login("u0", PASSWORD)
    read = history.Script(setup.redis, history.READ)
    rows = []
    done = 0
    for size in sizes:
        client = Client().connect(setup.web, session)
        client.wait_for(1, RECOVERY)
        setup.publisher.publish_events([Event.build(CHANNEL, 0, room="user:u0")])
        client.wait_for(1, CHANNEL)
        at = client.positions()
        client.close()
        mine = []
        for k in range(5):  # her 5 spread through the others' traffic
            setup.publish_to_others((size - done) // 5)
            mine += setup.publisher.publish_events([Event.build(CHANNEL, k, room="user:u0")])
        done = size
        setup.drained()
        times, catch_ups, reads = [], [], []
        for _ in range(7):
            again = TimedClient()
            started = time.perf_counter()
            again.connect(setup.web, session, auth={"positions": at})
            [(_, info, _)] = again.wait_for(1, RECOVERY, timeout=30)
            times.append(again.times[RECOVERY] - started)
            catch_ups.append(again.times[RECOVERY] - again.times["connect"])
            assert info["recovered"] and again.ids(CHANNEL) == mine, info
            again.close()
            stream = "events"
            names = [keys.history_clock(stream)] + [
                keys.history(stream, "/", r) for r in (None, "user:u0")
            ]
            started = time.perf_counter()
            read(keys=names, args=[at["0"]["last_id"], 10_001])
            reads.append(time.perf_counter() - started)
        rows.append(
            {
                "others": size,
                "connect_to_recovery_ms": round(statistics.median(times) * 1000, 2),
                "connected_to_recovery_ms": round(statistics.median(catch_ups) * 1000, 2),
                "history_read_ms": round(statistics.median(reads) * 1000, 3),
                "stream_entries": setup.redis.xlen("events"),
            }
        )
        print(f"  {size:>9,} to others: {rows[-1]}", flush=True)
    return rows


# -- a reconnect storm ------------------------------------------------------------------
class Storm:
    def __init__(self) -> None:
        self.proc = node_script("storm.mjs")
        assert self.read()["event"] == "started"

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("storm.mjs exited")
        return json.loads(line)

    def send(self, **msg: Any) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def phase_storm(setup: Setup, users: int, tabs: int, others: int) -> dict[str, Any]:
    names = [f"u{i}" for i in range(users)]
    cookies = {}
    for name in names:
        session = setup.web.login(name, PASSWORD)
        cookies[name] = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    owners = [name for name in names for _ in range(tabs)]
    storm = Storm()
    path = "/ws/socket.io"
    try:
        # Everyone online, and each tab has a position (its own first event).
        specs = [{"cookie": cookies[o]} for o in owners]
        connected = storm.send(cmd="connect", url=setup.web.url, path=path, clients=specs, expect=1)
        assert connected["event"] == "connected", connected
        setup.publisher.publish_events(
            [Event.build(CHANNEL, "hi", room=f"user:{n}") for n in names]
        )
        answer = storm.read()
        positions = [c["positions"] for c in answer["clients"]]
        # The web server stops (SIGTERM); meanwhile 2 events each, among `others`.
        assert setup.web.terminate(timeout=30) == 0
        storm.send(cmd="close")
        missed: dict[str, list[str]] = {n: [] for n in names}
        for half in range(2):
            setup.publish_to_others(others // 2)
            ids = setup.publisher.publish_events(
                [Event.build(CHANNEL, {"half": half}, room=f"user:{n}") for n in names]
            )
            for name, entry in zip(names, ids, strict=True):
                missed[name].append(entry)
        setup.drained()
        web = Web(setup.env, setup.tmp, name="web-restarted", port=setup.web.port)
        calls = commands(setup.redis)
        web.start()
        setup.web = web
        cpu = cpu_seconds(web.process.pid)
        specs = [
            {"cookie": cookies[o], "positions": p} for o, p in zip(owners, positions, strict=True)
        ]
        assert (
            storm.send(cmd="connect", url=web.url, path=path, clients=specs, expect=2)["event"]
            == "connected"
        )
        result = storm.read()
        cpu = cpu_seconds(web.process.pid) - cpu
        calls = commands(setup.redis) - calls
        exact = sum(
            1
            for owner, c in zip(owners, result["clients"], strict=True)
            if c["recovered"] and c["replayed"] == 2 and c["entries"] == missed[owner]
        )
        slowest = max(c["recovered_ms"] for c in result["clients"])
        storm.send(cmd="close")
    finally:
        storm.stop()
    return {
        "clients": len(owners),
        "users": users,
        "missed_each": 2,
        "others": others,
        "recovered_exactly": exact,
        "all_recovered_within_s": round(slowest / 1000, 3),
        "redis_commands_per_reconnect": round(calls / len(owners), 1),
        "web_cpu_ms_per_reconnect": round(cpu * 1000 / len(owners), 2),
    }


# -- the bridge with and without history --------------------------------------------------
class PublishOnly(BridgeLoop):
    """The same loop, publishing as a plain bridge would: one PUBLISH per entry and an
    XACK, pipelined (no history, no positions)."""

    def _publish_commands(self, valid, guard=""):
        s = self.settings
        commands = [
            ("PUBLISH", s.queue_channel, emit_message(event, stream_id, stream_id, ""))
            for stream_id, event in valid
        ]
        return [*commands, ("XACK", s.stream, s.group, *[i for i, _ in valid])]

    def _published(self, valid, replies):
        self._count("emitted", len(valid))


def bridge_rates(server: RedisServer, n: int, rounds: int) -> dict[str, Any]:
    """Entries/s through the bridge's loop from a backlog of ``n``, with per-room history
    and publishing only, alternating, ``rounds`` times each (medians)."""
    rates: dict[str, list[float]] = {"history": [], "publish_only": []}
    producer = server.client()
    for r in range(rounds):
        for kind, cls in (("history", BridgeLoop), ("publish_only", PublishOnly)):
            stream = f"cost:{kind}:{r}"
            settings = BridgeSettings(redis_url=server.url, stream=stream, consumer="c")
            client = server.client(encoding_errors="surrogateescape")
            loop = cls(settings, client=client)
            loop.ensure_group()
            pipe = producer.pipeline(transaction=False)
            for i in range(n):
                pipe.xadd(stream, {"channel": CHANNEL, "body": json.dumps(BODY_200),
                                   "room": f"user:other{i % 1000}"})  # fmt: skip
            pipe.execute()
            started = time.perf_counter()
            while True:
                reply = client.xreadgroup(settings.group, "c", {stream: ">"}, count=500)
                entries = _entries(reply)
                if not entries:
                    break
                loop.process(entries)
            rates[kind].append(n / (time.perf_counter() - started))
            client.close()
            producer.delete(stream)
    history_rate = statistics.median(rates["history"])
    plain_rate = statistics.median(rates["publish_only"])
    return {
        "entries": n,
        "rounds": rounds,
        "rooms": 1000,
        "with_history_per_s": round(history_rate),
        "publish_only_per_s": round(plain_rate),
        "cost_percent": round((1 - history_rate / plain_rate) * 100, 1),
    }


def phase_bridge_cost(setup: Setup, n: int, rounds: int) -> dict[str, Any]:
    setup.bridge.terminate()  # a quiet machine for the loops
    try:
        return bridge_rates(setup.server, n, rounds)
    finally:
        setup.bridge = Bridge(setup.env, setup.tmp, name="bridge-2").start()


# -- memory -----------------------------------------------------------------------------
SMALL_NODES = 512  # stream-node-max-bytes for the second measurement


def phase_memory(setup: Setup, rooms: int, events: int) -> dict[str, Any]:
    """History bytes per room and per event, with Redis's default stream nodes and with
    smaller ones (a new stream preallocates up to stream-node-max-bytes, 4096)."""

    def history_bytes(pattern: str) -> int:
        return sum(
            setup.redis.memory_usage(k, samples=0) or 0
            for k in setup.redis.scan_iter(match=pattern, count=1000)
        )

    def one_event_rooms(prefix: str) -> float:
        setup.publisher.publish_events(
            [Event.build(CHANNEL, BODY_200, room=f"{prefix}{i}") for i in range(rooms)]
        )
        setup.drained()
        return history_bytes(f"*history:1/:{prefix}*") / rooms

    per_room = one_event_rooms("mem:room")
    setup.publisher.publish_events([Event.build(CHANNEL, BODY_200, room="mem:busy")] * events)
    setup.drained()
    per_event = history_bytes("*history:1/:mem:busy") / events
    default = setup.redis.config_get("stream-node-max-bytes")["stream-node-max-bytes"]
    setup.redis.config_set("stream-node-max-bytes", SMALL_NODES)
    try:
        per_room_small = one_event_rooms("mem:small")
    finally:
        setup.redis.config_set("stream-node-max-bytes", default)
    return {
        "one_event_rooms": rooms,
        "bytes_per_room_with_one_event": round(per_room),
        f"bytes_per_room_with_one_event_at_node_max_{SMALL_NODES}": round(per_room_small),
        "events_in_one_room": events,
        "bytes_per_event": round(per_event),
        "body_bytes": len(json.dumps(BODY_200, separators=(",", ":"))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run of every phase")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    quick = args.quick
    results: dict[str, Any] = {"command": " ".join(["bench/recovery.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory(prefix="sb-recovery-") as tmp:
        users = 20 if quick else 500
        setup = Setup(Path(tmp), users)
        try:
            print("catch-up against others' traffic", flush=True)
            results["flat"] = phase_flat(
                setup, [1_000, 10_000] if quick else [10_000, 100_000, 1_000_000]
            )
            print("reconnect storm", flush=True)
            results["storm"] = phase_storm(setup, users, 2, 2_000 if quick else 100_000)
            print(f"  {results['storm']}", flush=True)
            print("bridge with and without history", flush=True)
            results["bridge"] = phase_bridge_cost(
                setup, 5_000 if quick else 100_000, 1 if quick else 5
            )
            print(f"  {results['bridge']}", flush=True)
            print("memory", flush=True)
            results["memory"] = phase_memory(setup, 1_000 if quick else 10_000, 1_000)
            print(f"  {results['memory']}", flush=True)
        finally:
            setup.stop()
    flat = results["flat"]
    results["flat_ratio"] = round(
        flat[-1]["connect_to_recovery_ms"] / flat[0]["connect_to_recovery_ms"], 2
    )
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
