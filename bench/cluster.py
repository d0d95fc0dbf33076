"""Bridge throughput on a local 3-master Redis Cluster: 1 shard vs 3 shards.

    .venv/bin/python bench/cluster.py              # 200k entries per run, table + JSON
    .venv/bin/python bench/cluster.py --quick      # a short smoke run
    .venv/bin/python bench/cluster.py --json out.json

Three cluster-enabled redis-servers (AOF everysec) joined by ``redis-cli --cluster
create``; with 3 shards, each shard's slot is given to its own master first. One web
server holds the queue subscription (SSUBSCRIBE), so every message crosses the wire.
For each shard count and number of bridge processes: a backlog of entries (64 rooms,
so every shard gets a share) is written, then the bridges start; the figure is
entries published and acked per second from the bridges' first read to an empty
backlog on every shard.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import Sampler, spawn, start_web, stop_processes, wait_for  # noqa: E402
from streambridge.webapp.app.users import UserStore  # noqa: E402

from streambridge import keys  # noqa: E402
from streambridge.publisher import Publisher  # noqa: E402
from streambridge.settings import ProducerSettings  # noqa: E402
from tests.support.topologies import LocalCluster  # noqa: E402

ROOMS = 64


def place_shards(cluster: LocalCluster, shards: int) -> dict[str, int]:
    """Give each shard's (still empty) slot to a master of its own; key -> port."""
    free = [n.port for n in cluster.nodes]
    placed: dict[str, int] = {}
    for key in keys.shards("events", shards):
        port = cluster.port_of(key)
        if port not in free:
            port = free[0]
            cluster.move_empty_slot(key, port)
        free.remove(port)
        placed[key] = port
    return placed


def group_totals(client: Any, shards: int) -> tuple[int, int]:
    """(entries read, entries still to do: lag + pending) over every shard's group;
    to do is -1 while a shard has no group yet."""
    read, to_do, missing = 0, 0, False
    for key in keys.shards("events", shards):
        groups = client.xinfo_groups(key) if client.exists(key) else []
        if not groups:
            missing = True
            continue
        read += groups[0]["entries-read"] or 0
        to_do += groups[0]["lag"] + groups[0]["pending"]
    return read, -1 if missing else to_do


def run_one(
    cluster: LocalCluster, tmp: Path, shards: int, bridges: int, entries: int
) -> dict[str, Any]:
    cluster.flush()
    placed = place_shards(cluster, shards) if shards > 1 else {}
    users = tmp / "users.json"
    UserStore(users).add("bench", "bench-password-123")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMBRIDGE_")},
        "REDIS_URL": cluster.url,
        "STREAMBRIDGE_SHARDS": str(shards),
        "STREAMBRIDGE_USERS_FILE": str(users),
        "STREAMBRIDGE_SECRET_KEY": "b" * 40,
        "STREAMBRIDGE_LOG_LEVEL": "WARNING",
        "STREAMBRIDGE_LOG_FORMAT": "json",
        "STREAMBRIDGE_MAXLEN": str(entries * 2),
    }
    web, _, _ = start_web(env, tmp / "web.log", path="/readyz")
    procs = [web]
    try:
        publisher = Publisher(
            settings=ProducerSettings(redis_url=cluster.url, shards=shards, maxlen=entries * 2)
        )
        publisher.publish_many(
            {"channel": "backlog", "body": {"n": i}, "room": f"room:{i % ROOMS}"}
            for i in range(entries)
        )
        client = cluster.client()
        per_shard = [client.xlen(k) for k in keys.shards("events", shards)]
        for i in range(bridges):
            procs.append(
                spawn(["bridge", "--consumer", f"bench-{i}"], env, tmp / f"bridge-{i}.log")
            )
        wait_for(lambda: group_totals(client, shards)[0] > 0, 60, "the first read")
        first = group_totals(client, shards)[0]
        pids = {f"bridge-{i}": p.pid for i, p in enumerate(procs[1:])}
        pids.update({f"redis-{n.port}": n.process.pid for n in cluster.nodes})
        pids["web"] = web.pid
        with Sampler(pids) as sampler:
            wait_for(lambda: group_totals(client, shards)[1] == 0, 600, "the backlog to drain")
        done = entries - first
        return {
            "shards": shards,
            "bridges": bridges,
            "entries": entries,
            "entries_per_shard": per_shard,
            "masters_used": len(set(placed.values())) if placed else 1,
            "seconds": round(sampler.wall, 2),
            "entries_per_s": round(done / sampler.wall),
            "cpu_s": {k: round(v, 2) for k, v in sampler.cpu.items()},
        }
    finally:
        stop_processes(procs)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| shards | bridge processes | masters used | entries/s | bridge CPU s | redis CPU s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = r["cpu_s"]
        bridge_cpu = sum(v for k, v in cpu.items() if k.startswith("bridge"))
        redis_cpu = "/".join(f"{v:.1f}" for k, v in cpu.items() if k.startswith("redis"))
        lines.append(
            f"| {r['shards']} | {r['bridges']} | {r['masters_used']} | {r['entries_per_s']:,} "
            f"| {bridge_cpu:.1f} | {redis_cpu} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--entries", type=int, help="entries per run (default 200,000)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    entries = args.entries or (5_000 if args.quick else 200_000)
    runs = [(1, 1), (3, 1)] if args.quick else [(1, 1), (3, 1), (1, 3), (3, 3)]
    results = []
    with tempfile.TemporaryDirectory(prefix="streambridge-bench-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster").start()
        try:
            for shards, bridges in runs:
                print(f"-- {shards} shard(s), {bridges} bridge process(es)", flush=True)
                started = time.monotonic()
                result = run_one(cluster, Path(tmp), shards, bridges, entries)
                print(f"   {result['entries_per_s']:,} entries/s "
                      f"({time.monotonic() - started:.0f}s)", flush=True)  # fmt: skip
                results.append(result)
        finally:
            cluster.stop()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": os.cpu_count(), "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
