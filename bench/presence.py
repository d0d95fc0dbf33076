"""Presence at scale: 2,000 connections in 200 rooms over two web servers.

    .venv/bin/python bench/presence.py                   # table, and bench/presence.json
    .venv/bin/python bench/presence.py --quick --json /tmp/p.json     # a smoke run

One private redis-server, two ``streambridge web`` processes (gevent). Each room has
10 users, one connection each, half on each server, and every one of them watches the
room's presence. Then one "mover" per room connects (paced) and later disconnects: the
time from its connect (or disconnect) to each watcher's receipt of the join (or leave)
is the delivery latency. Also timed: presence reads through ``GET /api/presence`` and
the registry's read script; and counted, on a redis-server of its own, the Redis
commands a connect, a disconnect and a heartbeat cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from bench.run import (  # noqa: E402
    PASSWORD,
    LoadGen,
    machine,
    start_web,
    stop_processes,
)
from streambridge.embedded_redis import RedisServer  # noqa: E402
from streambridge.presence import Presence  # noqa: E402

SOCKETIO_PATH = "/ws/socket.io"
SCRIPT_COMMANDS = ("zadd", "zrem", "zrangebyscore", "hincrby", "hdel", "hget", "hset", "pexpire")


def quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 2), "n": len(ordered)}


def write_users(path: Path, watchers: int, rooms: int) -> None:
    # One cheap hash for every user: 2,200 logins must not take minutes of scrypt.
    hashed = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    users: dict[str, Any] = {}
    for i in range(watchers):
        users[f"w{i}"] = {"password": hashed, "rooms": [f"room:{i % rooms}"]}
    for j in range(rooms):
        users[f"m{j}"] = {"password": hashed, "rooms": [f"room:{j}"]}
    path.write_text(json.dumps(users))
    path.chmod(0o600)


def login(url: str, user: str) -> requests.Session:
    session = requests.Session()
    session.headers["Origin"] = url
    form = session.get(url + "/login", timeout=10).text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = session.post(
        url + "/login",
        data={"username": user, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, f"login of {user} failed: {response.status_code}"
    return session


def cookie(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def command_costs() -> dict[str, Any]:
    """Redis commands per presence operation, counted on a redis-server of its own:
    a join (connect), a leave (disconnect) and a heartbeat of one room, each in a room
    where 10 users are present, as the web server sends them (one script each)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            client = server.client()
            presence = Presence(client, "events", ttl_s=15)
            for i in range(10):
                presence.join("/", "room:x", f"u{i}", f"c{i}")

            def counted(run) -> dict[str, float]:
                client.config_resetstat()
                n = run()
                stats = client.info("commandstats")
                calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
                scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
                inside = sum(calls.get(c, 0) for c in (*SCRIPT_COMMANDS, "time"))
                return {"scripts": scripts / n, "commands_in_scripts": inside / n}

            def joins() -> int:
                for i in range(100):
                    presence.join("/", "room:x", f"new{i}", f"n{i}")
                return 100

            def leaves() -> int:
                for i in range(100):
                    presence.leave("/", "room:x", f"new{i}", f"n{i}")
                return 100

            members = [(f"u{i}", f"c{i}") for i in range(10)]

            def heartbeats() -> int:
                for _ in range(100):
                    presence.heartbeat("/", "room:x", members)
                return 100

            return {
                "connect (per room)": counted(joins),
                "disconnect (per room)": counted(leaves),
                "heartbeat (per room, 10 connections)": counted(heartbeats),
            }
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="movers per second")
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--json", default=str(ROOT / "bench" / "presence.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 in 10 rooms")
    args = parser.parse_args()
    if args.quick:
        args.watchers, args.rooms, args.reads = 100, 10, 50
    results: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    tmp = Path(tempfile.mkdtemp(prefix="presence-bench-"))
    users = tmp / "users.json"
    write_users(users, args.watchers, args.rooms)
    redis_server = RedisServer(tmp / "redis", appendfsync="everysec").start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMBRIDGE_")},
        "REDIS_URL": redis_server.url,
        "STREAMBRIDGE_USERS_FILE": str(users),
        "STREAMBRIDGE_SECRET_KEY": "p" * 40,
        "STREAMBRIDGE_LOG_LEVEL": "WARNING",
        "STREAMBRIDGE_LOG_FORMAT": "json",
        "STREAMBRIDGE_LOGIN_RATE_LIMIT": "",
        "STREAMBRIDGE_API_RATE_LIMIT": "",
        "STREAMBRIDGE_MAX_CONNECTIONS_PER_ADDRESS": "0",
        "STREAMBRIDGE_MAX_UNFINISHED_PER_ADDRESS": "0",
    }
    webs: list[tuple[subprocess.Popen, str, int]] = []
    gen = None
    try:
        for name in ("web-a", "web-b"):
            proc, port, metrics_port = start_web(env, tmp / f"{name}.log", name)
            webs.append((proc, f"http://127.0.0.1:{port}", metrics_port))  # stopped in finally
        urls = [url for _, url, _ in webs]
        step(f"logging in {args.watchers + args.rooms} users")
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            watcher_users = [f"w{i}" for i in range(args.watchers)]
            # Room j's users are j, j+R, j+2R...: servers alternate by that multiple.
            watcher_urls = [urls[(i // args.rooms) % 2] for i in range(args.watchers)]
            sessions = list(pool.map(login, watcher_urls, watcher_users))
            mover_urls = [urls[j % 2] for j in range(args.rooms)]
            movers = list(pool.map(login, mover_urls, [f"m{j}" for j in range(args.rooms)]))
        step(f"  {time.monotonic() - t0:.1f} s")
        gen = LoadGen("presence_clients.mjs")
        step(f"connecting {args.watchers} watchers in {args.rooms} rooms over two servers")
        t0 = time.monotonic()
        gen.send(
            cmd="watchers",
            path=SOCKETIO_PATH,
            clients=[
                {
                    "url": watcher_urls[i],
                    "cookie": cookie(sessions[i]),
                    "room": f"room:{i % args.rooms}",
                }
                for i in range(args.watchers)
            ],
        )
        watching = gen.wait("watching", timeout=300)
        results["connect_and_watch_s"] = round(time.monotonic() - t0, 1)
        # Asked as each connected, all at once: mostly time queued behind the others.
        results["socket_read_during_connect_storm_ms"] = quantiles(watching["read_ms"])
        step(f"  all watching after {results['connect_and_watch_s']} s")
        gen.send(cmd="reread", count=args.reads)
        results["socket_read_ms"] = quantiles(gen.wait("reread", timeout=120)["read_ms"])

        step(f"{args.rooms} movers join, {args.rate}/s, then leave")
        gen.send(
            cmd="movers",
            path=SOCKETIO_PATH,
            rate=args.rate,
            clients=[
                {
                    "url": mover_urls[j],
                    "cookie": cookie(movers[j]),
                    "room": f"room:{j}",
                    "user": f"m{j}",
                }
                for j in range(args.rooms)
            ],
        )
        gen.wait("joined", timeout=120)
        gen.send(cmd="leave", rate=args.rate)
        gen.wait("left", timeout=120)
        gen.send(cmd="report")
        latencies = gen.wait("report")["latencies"]
        results["join_delivery_ms"] = quantiles(latencies["join"])
        results["leave_delivery_ms"] = quantiles(latencies["leave"])

        step(f"{args.reads} presence reads")
        http, script = [], []
        client = redis_server.client()
        registry = Presence(client, "events", ttl_s=15)
        for n in range(args.reads):
            j = n % args.rooms
            session = sessions[j + args.rooms * (n // args.rooms % 2)]  # one in room j
            url = watcher_urls[j + args.rooms * (n // args.rooms % 2)]
            t = time.perf_counter()
            answer = session.get(url + "/api/presence", params={"room": f"room:{j}"}, timeout=5)
            http.append((time.perf_counter() - t) * 1000)
            assert answer.ok and len(answer.json()["users"]) == args.watchers // args.rooms
            t = time.perf_counter()
            registry.read("/", f"room:{j}")
            script.append((time.perf_counter() - t) * 1000)
        results["http_read_ms"] = quantiles(http)
        results["script_read_ms"] = quantiles(script)

        step("one heartbeat interval with nothing else going on")
        beats = 'streambridge_web_presence_scripts_total{kind="heartbeat"}'
        trips = "streambridge_web_presence_round_trips_total"
        marks = [(metric(port, beats), metric(port, trips)) for *_, port in webs]
        client.config_resetstat()
        t0 = time.monotonic()
        time.sleep(5.5)  # at least one heartbeat per server (every ttl / 3 = 5 s)
        stats = client.info("commandstats")
        window = time.monotonic() - t0
        rounds = [
            (metric(port, beats) - b, metric(port, trips) - t)
            for (*_, port), (b, t) in zip(webs, marks, strict=True)
        ]
        evalsha = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        results["heartbeat"] = {
            "window_s": round(window, 1),
            # Only heartbeats in the window: one round trip per heartbeat round.
            "rounds_per_server": [t for _, t in rounds],
            "scripts_per_round": [s / t for s, t in rounds if t],
            "redis_usec_per_script": round(evalsha["usec"] / max(1, evalsha["calls"]), 1),
            "presence_keys": len(client.keys("{events:presence:*")),
        }
        results["commands"] = command_costs()
    finally:
        if gen is not None:
            gen.close()
        stop_processes([proc for proc, *_ in webs])
        redis_server.stop()
    print(table(results))
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    step(f"saved {args.json}")
    return 0


def step(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(r: dict[str, Any]) -> str:
    def q(d: dict) -> str:
        return f"p50 {d['p50']} / p99 {d['p99']} / max {d['max']} ms (n={d['n']})"

    lines = [
        f"{r['args']['watchers']} watchers in {r['args']['rooms']} rooms, two web servers",
        f"connect + watch all:        {r['connect_and_watch_s']} s",
        f"presence read, socket:      {q(r['socket_read_ms'])}",
        f"  (asked while connecting:  {q(r['socket_read_during_connect_storm_ms'])})",
        f"presence read, HTTP API:    {q(r['http_read_ms'])}",
        f"presence read, Redis script:{q(r['script_read_ms'])}",
        f"join delivered to watchers: {q(r['join_delivery_ms'])}",
        f"leave delivered to watchers:{q(r['leave_delivery_ms'])}",
        f"heartbeat: {r['heartbeat']}",
    ]
    for op, cost in r["commands"].items():
        lines.append(
            f"Redis per {op}: {cost['scripts']:.2f} script(s), "
            f"{cost['commands_in_scripts']:.1f} commands inside"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
