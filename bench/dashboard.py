"""What the operator dashboard costs, on this machine.

    .venv/bin/python bench/dashboard.py            # 8 shards, 4 web servers, 4 bridges
    .venv/bin/python bench/dashboard.py --quick    # a short smoke run

One private redis-server. The samples of 15 minutes (every 5 s) of several web servers
are written first, with a consumer group and consumers on every shard; then, timed
(medians of many runs):

* a sample: what each web server does every ``STREAMBRIDGE_DASHBOARD_SAMPLE_S``, with
  nobody watching (one pipelined read of every shard, one XADD);
* the charts' series drawn from all the samples;
* the streams' state (``ops.status``: length, groups, pending, bridges);
* the overview a watching admin is sent after every sample, and its size as JSON.
Redis commands per sample and per overview come from ``INFO commandstats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from streambridge.webapp.ext.dashboard import Dashboard  # noqa: E402
from streambridge.webapp.ext.dashboard_samples import FIELD, Samples  # noqa: E402
from streambridge.webapp.ext.metrics import LATENCY_BUCKETS, WebMetrics  # noqa: E402

from streambridge import defaults, keys, ops  # noqa: E402
from streambridge.embedded_redis import RedisServer  # noqa: E402
from streambridge.settings import WebSettings  # noqa: E402


def timed(fn, runs: int) -> tuple[float, float]:
    """(median, p99) in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def commands(client) -> int:
    return sum(v["calls"] for k, v in client.info("commandstats").items() if k != "cmdstat_info")


def per_call(client, fn, runs: int = 20) -> float:
    before = commands(client)
    for _ in range(runs):
        fn()
    return (commands(client) - before - 1) / runs  # less the INFO itself


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--bridges", type=int, default=4)
    args = parser.parse_args()
    runs = 20 if args.quick else 300
    step = defaults.DASHBOARD_SAMPLE_S
    window = defaults.DASHBOARD_WINDOW_S
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        try:
            client = server.client()
            settings = WebSettings(redis_url=server.url, shards=args.shards, secret_key="x" * 40)
            for shard in settings.shard_settings():
                for n in range(200):
                    client.xadd(shard.stream, {"channel": "m", "body": str(n)})
                client.xgroup_create(shard.stream, "bridge", id="0")
                for b in range(args.bridges):
                    name = f"bridge-{b}"
                    client.xreadgroup("bridge", name, {shard.stream: ">"}, count=5)
                    client.set(keys.alive(shard.stream, "bridge", name), "x", ex=15)
                client.xadd(shard.dead_stream, {"channel": "m", "reason": "bench"})
            # 15 minutes of samples from every web server.
            metrics = WebMetrics()
            now = time.time()
            key = keys.dashboard_samples(settings.stream)
            pipe = client.pipeline(transaction=False)
            for i in range(int(window / step)):
                t = now - window + i * step
                for s in range(args.servers):
                    latency = [i * k for k in range(len(LATENCY_BUCKETS) + 1)]
                    sample = {
                        "t": t,
                        "server": f"web-{s}",
                        "added": {shard.stream: i * 50 for shard in settings.shard_settings()},
                        "dead": 1,
                        "delivered": i * 900,
                        "connected": 2500,
                        "latency": latency,
                    }
                    pipe.xadd(key, {FIELD: orjson.dumps(sample)})
            pipe.execute()
            samples = Samples(client, settings, metrics.figures, LATENCY_BUCKETS, window)
            dashboard = Dashboard(
                client,
                settings,
                samples,
                viewer_of=lambda sid: None,
                is_admin=lambda viewer: False,
                is_connected=lambda sid: False,
                send=lambda *a: None,
            )
            figures = {
                "shards": args.shards,
                "web_servers": args.servers,
                "bridges": args.bridges,
                "samples_kept": client.xlen(key),
                "sample_ms": timed(samples.take, runs),
                "series_ms": timed(samples.series, runs),
                "status_ms": timed(lambda: ops.status(client, settings), runs),
                "overview_ms": timed(dashboard.overview, runs),
                "overview_json_bytes": len(json.dumps(dashboard.overview())),
                "commands_per_sample": per_call(client, samples.take),
                "commands_per_overview": per_call(client, dashboard.overview),
            }
        finally:
            server.stop()
    for name, value in figures.items():
        if isinstance(value, tuple):
            print(f"{name:<24} median {value[0]:7.2f}  p99 {value[1]:7.2f}")
        else:
            print(f"{name:<24} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
