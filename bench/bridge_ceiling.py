"""How fast the bridge publishes and acks, next to what redis-py and Redis allow here.

    .venv/bin/python bench/bridge_ceiling.py [--entries 200000] [--json out.json]

In one run, against a private redis-server (AOF everysec), each over a backlog of the same
entries in its own stream, batches of the bridge's size:

* ``read_ack``: XREADGROUP + XACK, the XACK of a batch pipelined with the next read:
  the ceiling of any consumer-group reader, at the bridge's batch size and (``best``)
  at whichever of 100, 250, 500 and 1,000 entries per read is fastest;
* ``publish_each``: the same plus one PUBLISH per entry in the pipeline: the old bridge's
  shape, one queue message per event;
* ``bridge``: a real ``streambridge bridge`` process from its first read until lag and
  pending are 0: validation, each event in its room's history, one queue message per
  batch, acks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import redis  # noqa: E402
from run import Sampler, Stack, _groups, drained, stop_processes, wait_for  # noqa: E402

from streambridge import defaults  # noqa: E402
from streambridge.embedded_redis import RedisServer  # noqa: E402

BODY = json.dumps({"t": 0, "text": "an ordinary event of about a hundred bytes, as JSON"})


def fill(client: redis.Redis, stream: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"channel": "m", "body": BODY, "room": f"user:u{i % 100}"})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    client.xgroup_create(stream, "g", id="0")


def read_ack(client: redis.Redis, stream: str, batch: int, publish: bool) -> float:
    """Entries/s read and acked by a pipelined reader (and published one by one)."""
    start = time.perf_counter()
    total = 0
    pipe = client.pipeline(transaction=False)
    pipe.xreadgroup("g", "c", {stream: ">"}, count=batch)
    while True:
        replies = pipe.execute()
        read = replies[-1]
        if not read:
            break
        entries = read[0][1]
        total += len(entries)
        pipe = client.pipeline(transaction=False)
        if publish:
            for _, fields in entries:
                pipe.publish("queue", fields.get(b"body") or fields["body"])
        pipe.xack(stream, "g", *[entry_id for entry_id, _ in entries])
        pipe.xreadgroup("g", "c", {stream: ">"}, count=batch)
    return total / (time.perf_counter() - start)


def bridge_rate(tmp: Path, n: int) -> dict[str, Any]:
    """A real bridge process draining a backlog of n entries (no web server)."""
    stack = Stack(tmp)
    stack.redis_server = RedisServer(tmp / "redis-bridge", appendfsync="everysec").start()
    stack.env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": stack.redis_server.url,
        "STREAMBRIDGE_LOG_LEVEL": "WARNING",
        "STREAMBRIDGE_MAXLEN": str(2 * n),
    }
    client = stack.redis()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("events", {"channel": "m", "body": BODY, "room": f"user:u{i % 100}"})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    try:
        stack.start_bridge()
        wait_for(lambda: _groups(client)[0]["entries-read"], 60, "the first read")
        first = _groups(client)[0]["entries-read"]
        assert stack.bridge is not None and stack.redis_server.process is not None
        pids = {"bridge": stack.bridge.pid, "redis": stack.redis_server.process.pid}
        start = time.perf_counter()
        with Sampler(pids) as sampled:
            wait_for(lambda: drained(client), 600, "the backlog to drain")
        seconds = time.perf_counter() - start
    finally:
        stop_processes([p for p in (stack.bridge,) if p is not None])
        stack.redis_server.stop()
    return {
        "entries": n - first,
        "seconds": round(seconds, 2),
        "per_s": (n - first) / seconds,
        "cpu_s": {name: round(cpu, 2) for name, cpu in sampled.cpu.items()},
    }


BATCHES = (100, 250, 500, 1000)


def measure(tmp: Path, entries: int, batch: int = defaults.BATCH_SIZE) -> dict[str, Any]:
    server = RedisServer(tmp / "redis-ceiling", appendfsync="everysec").start()
    try:
        client = server.client()
        fill(client, "b", entries)
        publish_each = read_ack(client, "b", batch, publish=True)
        by_batch = {}
        for size in sorted({batch, *BATCHES}):
            fill(client, f"a{size}", entries)
            by_batch[size] = read_ack(client, f"a{size}", size, publish=False)
            client.delete(f"a{size}")
    finally:
        server.stop()
    ceiling = by_batch[batch]
    best = max(by_batch, key=lambda size: by_batch[size])
    bridge = bridge_rate(tmp, entries)
    return {
        "entries": entries,
        "batch": batch,
        "read_ack_per_s": round(ceiling),
        "read_ack_per_s_by_batch": {str(k): round(v) for k, v in by_batch.items()},
        "best_read_ack_per_s": round(by_batch[best]),
        "best_read_ack_batch": best,
        "publish_each_per_s": round(publish_each),
        "bridge_per_s": round(bridge["per_s"]),
        "bridge_seconds": bridge["seconds"],
        "bridge_cpu_s": bridge["cpu_s"]["bridge"],
        "bridge_redis_cpu_s": bridge["cpu_s"]["redis"],
        "bridge_pct_of_read_ack": round(100 * bridge["per_s"] / ceiling, 1),
        "bridge_pct_of_best_read_ack": round(100 * bridge["per_s"] / by_batch[best], 1),
        "publish_each_pct_of_read_ack": round(100 * publish_each / ceiling, 1),
    }


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entries", type=int)
    parser.add_argument("--quick", action="store_true", help="10,000 entries")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    entries = args.entries or (10_000 if args.quick else 200_000)
    with tempfile.TemporaryDirectory(prefix="sb-ceiling-") as tmp:
        result = measure(Path(tmp), entries)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:,}" for k, v in value.items())
        print(f"{key:32} {value:>12,}" if isinstance(value, int) else f"{key:32} {value:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
