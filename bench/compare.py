"""Three systems side by side, with the same Node socket.io clients, on this machine.

    .venv/bin/python bench/compare.py                    # full run, table + JSON
    .venv/bin/python bench/compare.py --quick            # short smoke run of every system
    .venv/bin/python bench/compare.py --json out.json --profile bench/profile-web.svg

Systems (each with a private redis-server of its own, AOF everysec):

* ``plain``: a Flask-SocketIO server as the classic pattern runs it
  (``SocketIO(app, message_queue=REDIS_URL)``, ``socketio.run``, eventlet) and an external
  producer emitting through ``SocketIO(message_queue=...).emit()``: one PUBLISH per event,
  nothing stored;
* ``streambridge-<mode>``: ``streambridge web`` under that async mode and one bridge; the
  producer XADDs to the stream; every event kept in its room's history, acked once published;
* ``node``: socket.io 4 with ``@socket.io/redis-streams-adapter``; the producer XADDs the
  adapter's BROADCAST entries to its stream, as its servers do.

Each gets ``--clients`` clients (spread over two Node processes), then events at each
``--rates`` for ``--seconds``, then a burst at ``--saturation`` events/s. Latency is from
just before the XADD (or emit) to receipt, on the same clock. CPU is per process, from
/proc, over the phase and the time its last events took to arrive.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as common  # noqa: E402  (bench/run.py: processes, clients, percentiles)
from run import ROOT, Clients, Sampler, Stack, stop_processes, wait_for  # noqa: E402

from streambridge.embedded_redis import RedisServer  # noqa: E402

CHANNEL = common.CHANNEL
SOCKETIO_PATH = "/ws/socket.io"
NODE_STREAM = "socket.io"  # the adapter's default stream name
SYSTEM_NAMES = ("plain", "streambridge-gevent", "streambridge-eventlet", "streambridge-threading")


# -- the systems ------------------------------------------------------------------------
@dataclass
class Target:
    """What the clients and the producer need of a running system."""

    name: str
    tmp: Path
    url: str = ""
    cookie: str = ""
    redis_server: RedisServer | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stack: Stack | None = None

    def redis(self):
        assert self.redis_server is not None
        return self.redis_server.client()

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.processes.items()}
        assert self.redis_server is not None and self.redis_server.process is not None
        pids["redis"] = self.redis_server.process.pid
        return pids

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            return
        stop_processes(list(self.processes.values()))
        if self.redis_server is not None:
            self.redis_server.stop()


def start(name: str, tmp: Path) -> Target:
    tmp.mkdir(parents=True, exist_ok=True)
    target = Target(name, tmp)
    if name.startswith("streambridge"):
        mode = name.split("-", 1)[1] if "-" in name else "gevent"
        # Room for the 10,000-connection phase beside connections still closing.
        settings = {"STREAMBRIDGE_ASYNC_MODE": mode, "STREAMBRIDGE_MAX_CONNECTIONS": "15000"}
        stack = Stack(tmp).start(settings)
        target.stack = stack
        target.redis_server = stack.redis_server
        target.url, target.cookie = stack.url, stack.cookie
        assert stack.bridge is not None
        target.processes = {"web": stack.web, "bridge": stack.bridge}
        return target
    if name not in ("plain", "node"):
        raise SystemExit(f"unknown system {name!r}; known: {', '.join(SYSTEM_NAMES)}, node")
    target.redis_server = RedisServer(tmp / "redis", appendfsync="everysec").start()
    log = tmp / f"{name}.log"

    def spawn(port: int) -> subprocess.Popen:
        assert target.redis_server is not None
        if name == "plain":
            command = [sys.executable, str(BENCH / "plain_server.py")]
            command += [str(port), target.redis_server.url, "eventlet"]
        else:
            command = ["node", str(BENCH / "node_peer.mjs")]
            command += [str(port), target.redis_server.url, SOCKETIO_PATH]
        with log.open("ab") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    try:
        web, port = common.start_server(name, spawn, log)
    except BaseException:
        target.stop()
        raise
    target.url = f"http://127.0.0.1:{port}"
    target.processes = {"web": web}
    return target


class Producer:
    """Sends events paced at a rate, the way each system is fed."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.redis = target.redis()
        if target.name == "plain":
            from flask_socketio import SocketIO

            assert target.redis_server is not None
            self.socketio = SocketIO(
                message_queue=target.redis_server.url,
                channel="flask-socketio",
                async_mode="threading",
            )

    def send(self, n: int) -> None:
        body = {"t": time.time() * 1000, "n": n}
        name = self.target.name
        if name == "plain":
            self.socketio.emit(CHANNEL, body)
        elif name == "node":
            message = {"packet": {"type": 2, "data": [CHANNEL, body], "nsp": "/"}}
            message["opts"] = {"rooms": [], "except": []}
            fields = {"uid": "emitter", "nsp": "/", "type": "3", "data": json.dumps(message)}
            self.redis.xadd(NODE_STREAM, fields, maxlen=10_000, approximate=True)
        else:
            self.redis.xadd("events", {"channel": CHANNEL, "body": json.dumps(body)})

    def run(self, rate: float, seconds: float) -> int:
        return common.paced(self.send, rate, seconds)


# -- one phase ----------------------------------------------------------------------------
def phase(
    target: Target,
    clients: Clients,
    rate: float,
    seconds: float,
    n_clients: int,
    settle_s: float,
    profile: str | None = None,
) -> dict[str, Any]:
    producer = Producer(target)
    clients.report()  # count from zero
    spy = None
    if profile:
        py_spy = str(Path(sys.executable).parent / "py-spy")
        pid = str(target.processes["web"].pid)
        # A .txt file gets the collapsed stacks (one line per stack, to read or grep).
        form = "raw" if profile.endswith(".txt") else "flamegraph"
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", pid, "--output", profile, "--format", form,
             "--rate", "200", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    with Sampler(target.pids()) as s:
        t0 = time.monotonic()
        sent = producer.run(rate, seconds)
        produced_s = time.monotonic() - t0
        expected = sent * n_clients
        deadline = time.monotonic() + settle_s
        got = clients.count()
        while got < expected and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the clients' counters, bounded by the deadline
            got = clients.count()
        elapsed = time.monotonic() - t0
    if spy is not None:
        spy.send_signal(2)  # py-spy writes its file on SIGINT
        spy.wait(30)
    report = clients.report()
    cpu = s.summary()
    deliveries = report["received"]
    per_delivery = {  # CPU µs per delivery = CPU ms per 1,000 deliveries
        name: round(1e6 * v["cpu_s"] / deliveries, 2) if deliveries else None
        for name, v in cpu.items()
    }
    return {
        "rate": rate,
        "seconds": seconds,
        "clients": n_clients,
        "sent": sent,
        "deliveries": deliveries,
        "delivered_pct": round(100 * deliveries / expected, 2) if expected else None,
        # Over the time from the first event sent to the last received (or the deadline).
        "deliveries_per_s": round(deliveries / elapsed),
        "offered_per_s": round(expected / produced_s),
        "latency_ms": report["latency_ms"],
        "loadgen_cpu_pct": report["loadgen_cpu_pct"],
        "processes": cpu,
        "cpu_us_per_delivery": per_delivery,
        "system_cpu_us_per_delivery": round(sum(v for v in per_delivery.values() if v), 2),
    }


def warm_up(target: Target, clients: Clients, n_clients: int) -> None:
    """An event at a time until one reaches every client: the phases then measure
    delivery, not start-up (the Node adapter reads its stream from "$" until it has seen
    an entry, so one added between two of its first reads is never read)."""
    producer = Producer(target)
    for _ in range(6):  # 5 s each: one later than that could be counted in the first phase
        wanted = clients.count() + n_clients
        producer.send(-1)
        try:
            wait_for(lambda wanted=wanted: clients.count() >= wanted, 5, "the warm-up event")
            return
        except TimeoutError:
            continue
    raise RuntimeError(f"{target.name}: no warm-up event reached all {n_clients} clients")


def bench_system(name: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    target = start(name, tmp / name)
    clients = Clients(target, 2)  # type: ignore[arg-type]  (url, cookie: what it reads)
    out: dict[str, Any] = {"system": name}
    try:
        clients.connect(args.clients)
        warm_up(target, clients, args.clients)
        for rate in args.rates:
            profile = None
            if (
                args.profile
                and name == f"streambridge-{args.profile_mode}"
                and rate == max(args.rates)
            ):
                profile = args.profile
            step(f"{name}: {rate:g} events/s to {args.clients} clients")
            out[f"rate_{rate:g}"] = phase(
                target, clients, rate, args.seconds, args.clients, args.settle, profile
            )
        step(f"{name}: saturation, {args.saturation:g} events/s offered")
        out["saturation"] = phase(
            target, clients, args.saturation, args.saturation_seconds, args.clients, 60
        )
    finally:
        clients.close()
        target.stop()
    return out


def bench_connections(name: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Target 5: memory per idle connection with ``--idle`` connections (the growth of a
    second round, after a first warmed the allocator up, as bench/run.py measures), and
    ``--many`` connections getting a broadcast at 1 event/s."""
    target = start(name, tmp / f"{name}-connections")
    out: dict[str, Any] = {"system": name}
    try:
        assert target.stack is not None, "connection phases need a streambridge system"
        step(f"{name}: web memory per idle connection, {args.idle:,} connections")
        out["idle_memory"] = common.phase_idle_memory(target.stack, args.idle)
        step(f"{name}: {args.many:,} connections, a broadcast every second")
        clients = Clients(target, max(2, args.many // 2500))  # type: ignore[arg-type]
        try:
            started = time.monotonic()
            clients.connect_in_steps(args.many)
            connect_s = time.monotonic() - started
            out["many"] = phase(
                target, clients, 1.0, args.many_seconds, args.many, 30, args.profile_many
            )
            out["many"]["connect_s"] = round(connect_s, 1)
            out["many"]["web_rss_mb"] = round(common.rss_mb(target.processes["web"].pid), 1)
        except (TimeoutError, RuntimeError) as exc:
            out["many"] = {"error": str(exc), "clients": args.many}
        finally:
            clients.close()
    finally:
        target.stop()
    return out


def step(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


# -- the table ----------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    names = [r["system"] for r in results]
    width = max(12, *(len(n) for n in names)) + 2
    base = results[0]
    phases = [k for k in base if k.startswith("rate_")] + ["saturation"]
    rows: list[tuple[str, list[str]]] = []
    for key in phases:
        label = f"{base[key]['rate']:g} ev/s" if key != "saturation" else "saturation"
        label += f" x {base[key]['clients']}"

        def cells(fn, results=results, key=key) -> list[str]:
            return [fn(r[key]) if key in r else "-" for r in results]

        def ms(p):
            return lambda ph: "-" if ph["latency_ms"][p] is None else f"{ph['latency_ms'][p]:.1f}"

        rows += [
            (f"{label}: delivered %", cells(lambda ph: f"{ph['delivered_pct']:.1f}")),
            (f"{label}: deliveries/s", cells(lambda ph: f"{ph['deliveries_per_s']:,}")),
            (f"{label}: p50 ms", cells(ms("p50"))),
            (f"{label}: p95 ms", cells(ms("p95"))),
            (f"{label}: p99 ms", cells(ms("p99"))),
            (
                f"{label}: web CPU s",
                cells(lambda ph: f"{ph['processes']['web']['cpu_s']:.2f}"),
            ),
            (
                f"{label}: bridge / redis CPU s",
                cells(
                    lambda ph: (
                        f"{ph['processes'].get('bridge', {}).get('cpu_s', 0):.2f}"
                        f" / {ph['processes']['redis']['cpu_s']:.2f}"
                    )
                ),
            ),
            (
                f"{label}: web CPU µs / delivery",
                cells(lambda ph: f"{ph['cpu_us_per_delivery']['web']:.2f}"),
            ),
            (
                f"{label}:   ratio to {names[0]}",
                [
                    _ratio(
                        r[key]["cpu_us_per_delivery"]["web"],
                        base[key]["cpu_us_per_delivery"]["web"],
                    )
                    if key in r
                    else "-"
                    for r in results
                ],
            ),
            (
                f"{label}: all processes CPU µs / delivery",
                cells(lambda ph: f"{ph['system_cpu_us_per_delivery']:.2f}"),
            ),
            (f"{label}: load generator CPU %", cells(lambda ph: str(ph["loadgen_cpu_pct"]))),
        ]
    label_width = max(len(r[0]) for r in rows) + 2
    lines = ["figure".ljust(label_width) + "".join(n.rjust(width) for n in names)]
    lines.append("-" * len(lines[0]))
    for label, values in rows:
        lines.append(label.ljust(label_width) + "".join(v.rjust(width) for v in values))
    return "\n".join(lines)


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run of every system")
    parser.add_argument(
        "--systems",
        default="plain,streambridge-gevent,streambridge-eventlet,streambridge-threading,node",
        help="comma-separated ('none' for only the connection phases); the first is the "
        "base of the ratios",
    )
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rates", help="comma-separated events/s")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--saturation", type=float, help="events/s offered in the burst")
    parser.add_argument("--profile", help="write a py-spy flame graph of the web server here")
    parser.add_argument("--profile-mode", default="gevent", help="which streambridge to profile")
    parser.add_argument(
        "--profile-many", help="a py-spy profile of the web server in the --many broadcast"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--connections",
        default="streambridge-gevent",
        help="systems whose memory per idle connection and many-connection broadcast are "
        "measured (comma-separated; 'none' to skip)",
    )
    parser.add_argument("--idle", type=int, help="idle connections (default 5,000)")
    parser.add_argument("--many", type=int, help="connections of the broadcast (10,000)")
    args = parser.parse_args()
    quick = args.quick
    args.clients = args.clients or (20 if quick else 200)
    args.rates = [float(r) for r in (args.rates or "50,500").split(",")]
    args.seconds = args.seconds or (1.0 if quick else 10.0)
    args.saturation = args.saturation or (1000.0 if quick else 1500.0)
    args.saturation_seconds = 1.0 if quick else 5.0
    args.settle = 10.0
    args.idle = args.idle or (200 if quick else 5_000)
    args.many = args.many or (400 if quick else 10_000)
    args.many_seconds = 3.0 if quick else 10.0
    for option in ("profile", "profile_many"):
        if getattr(args, option):
            setattr(args, option, str(Path(getattr(args, option)).resolve()))
    import tempfile

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sb-compare-") as tmp:
        for name in args.systems.split(","):
            if name.strip() and name.strip() != "none":
                results.append(bench_system(name.strip(), Path(tmp), args))
        if results:
            print(table(results), flush=True)
            save(args, results, [])  # kept if a connection phase fails
        connections = [
            bench_connections(name.strip(), Path(tmp), args)
            for name in args.connections.split(",")
            if name.strip() and name.strip() != "none"
        ]
    for row in connections:
        idle, many = row["idle_memory"], row["many"]
        if "error" in many:
            print(f"{row['system']}: {many['clients']:,} connections failed: {many['error']}")
            continue
        print(
            f"{row['system']}: {idle['kb_per_connection']} KB per idle connection "
            f"({idle['connections']:,}; {idle['kb_per_connection_from_cold']} KB from cold); "
            f"{many['clients']:,} connections at 1 event/s: {many['delivered_pct']}% delivered, "
            f"p50 {many['latency_ms']['p50']} ms, p99 {many['latency_ms']['p99']} ms, "
            f"web RSS {many['web_rss_mb']} MB, connected in {many['connect_s']} s"
        )
    save(args, results, connections)
    return 0


def save(args: argparse.Namespace, results: list[dict], connections: list[dict]) -> None:
    if args.json:
        document = {
            "machine": common.machine(),
            "args": vars(args),
            "results": results,
            "connections": connections,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
