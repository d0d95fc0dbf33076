"""streambridge vs the plain Flask-SocketIO queue, side by side, on this machine.

    .venv/bin/python bench/run.py                 # full run (a few minutes), table + JSON
    .venv/bin/python bench/run.py --quick         # a short smoke run of every phase
    .venv/bin/python bench/run.py --json out.json

One private redis-server (AOF, everysec), one web server (`streambridge web`, eventlet),
one bridge; the same web server and the same Node socket.io clients serve both patterns:

* plain: an external process emits through ``SocketIO(message_queue=...)`` (one PUBLISH
  per emit, nothing stored);
* streambridge: the producer XADDs; the bridge publishes and acks.

Latency is measured from just before XADD (or emit) to receipt in a Node client, on the
same clock. The load generator's CPU is reported so it can be ruled out as the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402
from streambridge.webapp.app.users import UserStore  # noqa: E402

from streambridge.embedded_redis import RedisServer, free_port  # noqa: E402
from tests.support import CLI, PORT_TAKEN, serves  # noqa: E402

CHANNEL = "bench"
PASSWORD = "bench-password-123"  # noqa: S105 - a throwaway user of a private server
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- measuring processes --------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Samples RSS of some processes every 100 ms; CPU is read at the phase edges."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = {}
        self.series: dict[str, list[float]] = {}
        self.cpu0: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            for name, pid in self.pids.items():
                value = rss_mb(pid)
                self.peak[name] = max(self.peak.get(name, 0.0), value)
                self.series.setdefault(name, []).append(value)
            self.stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.wall = time.monotonic() - self.t0
        self.cpu = {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}

    def summary(self) -> dict[str, Any]:
        return {
            name: {"cpu_s": round(self.cpu[name], 2), "peak_rss_mb": round(self.peak[name], 1)}
            for name in self.pids
        }


# -- the load generator ---------------------------------------------------------------
def node_script(name: str) -> subprocess.Popen:
    """A Node script of bench/ that takes JSON lines on stdin and answers on stdout."""
    return subprocess.Popen(
        ["node", str(ROOT / "bench" / name)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


class LoadGen:
    """One Node process with many socket.io clients (bench/clients.mjs, or another
    script of bench/ that speaks the same way)."""

    def __init__(self, script: str = "clients.mjs") -> None:
        self.proc = node_script(script)
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.wait("started")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def wait(self, event: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generator: no {event!r} in {timeout}s") from None
            if msg.get("event") == event:
                return msg
            if msg.get("event") == "connect_error":
                print(f"  load generator: connect error {msg['message']}", file=sys.stderr)
            if msg.get("event") == "error":
                raise RuntimeError(f"load generator: {msg.get('error')}")

    def report(self) -> dict:
        self.send(cmd="report")
        return self.wait("report")

    def count(self) -> dict:
        self.send(cmd="count")
        return self.wait("count")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="exit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):  # a broken pipe: exiting anyway
                self.proc.kill()
                self.proc.wait()


class Clients:
    """Clients spread over several Node processes, so none of them is the bottleneck."""

    def __init__(self, stack: Stack, processes: int) -> None:
        self.stack = stack
        self.gens = [LoadGen() for _ in range(processes)]

    def connect_in_steps(self, total: int, step: int = 500) -> None:
        """Open ``total`` connections ``step`` at a time, as clients arrive in life:
        thousands of handshakes at the same instant time out against one server (each
        is a login check and a catch-up)."""
        for start in range(0, total, step):
            self.connect(min(step, total - start))

    def connect(self, total: int, **options: Any) -> None:
        share = [
            total // len(self.gens) + (i < total % len(self.gens)) for i in range(len(self.gens))
        ]
        for gen, n in zip(self.gens, share, strict=True):
            if n:
                gen.send(
                    cmd="connect",
                    url=self.stack.url,
                    path="/ws/socket.io",
                    cookie=self.stack.cookie,
                    clients=n,
                    **options,
                )
        for gen, n in zip(self.gens, share, strict=True):
            if n:
                gen.wait("connected", timeout=120)

    def report(self) -> dict[str, Any]:
        reports = [g.report() for g in self.gens]
        hist: dict[int, int] = {}
        for r in reports:
            for bucket, count in r["hist"].items():
                hist[int(bucket)] = hist.get(int(bucket), 0) + count
        return {
            "received": sum(r["received"] for r in reports),
            "per_client_min": min(r["per_client_min"] for r in reports),
            "unique_min": min(
                (r["unique_min"] for r in reports if r["unique_min"] is not None), default=None
            ),
            "connected": sum(r["connected"] for r in reports),
            "reconnects": sum(r["reconnects"] for r in reports),
            "recoveries": [x for r in reports for x in r["recoveries"]],
            "latency_ms": percentiles(hist),
            "loadgen_cpu_pct": [round(100 * r["cpu_s"] / max(r["wall_s"], 1e-9)) for r in reports],
            "loadgen_rss_mb": [round(r["rss_mb"]) for r in reports],
        }

    def count(self) -> int:
        return sum(g.count()["received"] for g in self.gens)

    def disconnect(self) -> None:
        for g in self.gens:
            g.send(cmd="disconnect")
        for g in self.gens:
            g.wait("disconnected")

    def close(self) -> None:
        for g in self.gens:
            g.close()


def percentiles(hist: dict[int, int]) -> dict[str, float | None]:
    total = sum(hist.values())
    out: dict[str, float | None] = {"p50": None, "p95": None, "p99": None, "max": None}
    if not total:
        return out
    wanted = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        for name, q in wanted.items():
            if out[name] is None and seen >= q * total:
                out[name] = bucket / 10
    out["max"] = max(hist) / 10
    return out


# -- the system under test ------------------------------------------------------------
@dataclass
class Stack:
    tmp: Path
    redis_server: RedisServer = field(init=False)
    web: subprocess.Popen | None = field(init=False, default=None)
    bridge: subprocess.Popen | None = field(init=False, default=None)
    port: int = field(init=False)
    metrics_port: int = field(init=False)
    cookie: str = field(init=False)
    env: dict[str, str] = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_env: dict[str, str]) -> Stack:
        self.redis_server = RedisServer(self.tmp / "redis", appendfsync="everysec").start()
        try:
            return self._start_the_rest(extra_env)
        except BaseException:
            self.stop()
            raise

    def _start_the_rest(self, extra_env: dict[str, str]) -> Stack:
        users = self.tmp / "users.json"
        UserStore(users).add("bench", PASSWORD)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STREAMBRIDGE_")},
            "REDIS_URL": self.redis_server.url,
            "STREAMBRIDGE_USERS_FILE": str(users),
            "STREAMBRIDGE_SECRET_KEY": "b" * 40,
            "STREAMBRIDGE_LOG_LEVEL": "WARNING",
            "STREAMBRIDGE_LOG_FORMAT": "json",
            "STREAMBRIDGE_MAXLEN": "2000000",
            # The catch-up phase replays 10,000 broadcasts: the room keeps them all.
            "STREAMBRIDGE_HISTORY_SIZE": "20000",
            # Every load-generating client comes from this one address.
            "STREAMBRIDGE_MAX_CONNECTIONS_PER_ADDRESS": "0",
            "STREAMBRIDGE_MAX_UNFINISHED_PER_ADDRESS": "0",
            **extra_env,
        }
        self.start_web()
        session = requests.Session()
        form = session.get(self.url + "/login", timeout=5).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token, "no CSRF token on the login page"
        response = session.post(
            self.url + "/login",
            data={"username": "bench", "password": PASSWORD, "csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 302, f"login failed: {response.status_code}"
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        self.start_bridge()
        return self

    def start_web(self, **extra_env: str) -> None:
        env = {**self.env, **extra_env}
        self.web, self.port, self.metrics_port = start_web(env, self.tmp / "web.log")

    def restart_web(self, **extra_env: str) -> None:
        killed = stop_processes([self.web])
        self.start_web(**extra_env)  # also after a kill: the next phases need a server
        if killed:
            raise RuntimeError("the web server did not exit within 15 s of SIGTERM")

    def _spawn(self, *args: str) -> subprocess.Popen:
        return spawn(args, self.env, self.tmp / f"{args[0]}.log")

    def start_bridge(self) -> None:
        self.bridge = self._spawn("bridge", "--consumer", "bench-bridge")
        client = self.redis()
        wait_for(lambda: any(g["name"] == "bridge" for g in _groups(client)), 30, "bridge group")

    def stop_bridge(self) -> None:
        if self.bridge is not None:
            stop_processes([self.bridge])
            self.bridge = None

    def redis(self) -> redis.Redis:
        return self.redis_server.client()

    def stop(self) -> None:
        # Also after a start that failed halfway: what was started is stopped.
        stop_processes([p for p in (self.bridge, self.web) if p is not None])
        self.redis_server.stop()


def stop_processes(procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """SIGTERM them all, then wait; those still running after 15 s are killed (and
    returned)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    killed = []
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed.append(proc)
    return killed


def _groups(client: redis.Redis) -> list[dict]:
    try:
        return client.xinfo_groups("events")
    except redis.ResponseError:
        return []


def spawn(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``streambridge <args>``, its output added to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def start_web(
    env: dict[str, str], log: Path, name: str = "the web server", path: str = "/healthz"
) -> tuple[subprocess.Popen, int, int]:
    """``streambridge web`` on free ports, its metrics on one of its own (the bridge must
    not take it too): (process, port, metrics port)."""
    metrics_port = 0

    def spawn_web(port: int) -> subprocess.Popen:
        nonlocal metrics_port
        metrics_port = free_port()
        web_env = {**env, "STREAMBRIDGE_METRICS_PORT": str(metrics_port)}
        return spawn(["web", "--host", "127.0.0.1", "--port", str(port)], web_env, log)

    proc, port = start_server(name, spawn_web, log, path)
    return proc, port, metrics_port


def start_server(
    name: str, spawn: Callable[[int], subprocess.Popen], log: Path, path: str = "/healthz"
) -> tuple[subprocess.Popen, int]:
    """``spawn(port)`` on a port free_port() found free, then wait until ``path`` answers.
    A port taken before the server bound it is chosen again (see ``PORT_TAKEN``). Any
    other exit, or no answer within 30 s, raises with the end of ``log`` (the server is
    not left running)."""
    tail = ""
    for _ in range(3):
        port = free_port()
        start = log.stat().st_size if log.exists() else 0
        proc = spawn(port)

        def answered(proc: subprocess.Popen = proc, port: int = port) -> bool:
            return proc.poll() is not None or serves(proc, port, path)

        try:
            wait_for(answered, 30, f"{name}'s {path}")
        except TimeoutError:
            stop_processes([proc])
            raise
        if proc.poll() is None:
            return proc, port
        tail = log.read_bytes()[start:].decode(errors="replace")
        if not any(sign in tail for sign in PORT_TAKEN):
            raise RuntimeError(f"{name} exited ({proc.returncode}); {log}:\n{tail[-3000:]}")
    raise RuntimeError(f"{name}: its port was taken three times in a row:\n{tail[-3000:]}")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def queue_read(client: redis.Redis) -> bool:
    """Nothing waits in any pub/sub client's output buffer (the web has read it all)."""
    return all(c.get("omem") in ("0", 0) for c in client.client_list(_type="pubsub"))


def drained(client: redis.Redis) -> bool:
    groups = _groups(client)
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


# -- producers ------------------------------------------------------------------------
class Producer:
    def __init__(self, kind: str, stack: Stack, pad: int = 0) -> None:
        self.kind = kind
        # Padding: realistic, compressible text, to measure permessage-deflate.
        self.pad = ("streambridge keeps every event " * (pad // 30 + 1))[:pad]
        self.redis = stack.redis()
        if kind == "plain":
            from flask_socketio import SocketIO

            # The classic pattern: an external process emits through the queue.
            self.socketio = SocketIO(
                message_queue=stack.redis_server.url,
                channel="flask-socketio",
                async_mode="threading",
            )

    def send(self, n: int) -> None:
        body = {"t": time.time() * 1000, "n": n}
        if self.pad:
            body["pad"] = self.pad
        if self.kind == "plain":
            self.socketio.emit(CHANNEL, body)
        else:
            self.redis.xadd("events", {"channel": CHANNEL, "body": json.dumps(body)})

    def run(self, rate: float, seconds: float) -> int:
        return paced(self.send, rate, seconds)


def paced(send, rate: float, seconds: float) -> int:
    """Call ``send(n)`` at ``rate`` per second for ``seconds``; returns how many were sent."""
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        ahead = start + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the producer
        send(n)
    return total


# -- phases ---------------------------------------------------------------------------
def phase_emit_rates(stack: Stack, n: int) -> dict[str, Any]:
    plain = Producer("plain", stack)
    start = time.perf_counter()
    for i in range(n):
        plain.socketio.emit(CHANNEL, {"t": 0, "n": i})
    plain_rate = n / (time.perf_counter() - start)
    return {"plain_emit_events_per_s": round(plain_rate)}


def phase_bridge_backlog(stack: Stack, n: int) -> dict[str, Any]:
    """A backlog of n entries, published and acked by one bridge."""
    from streambridge.publisher import Publisher
    from streambridge.settings import ProducerSettings

    client = stack.redis()
    stack.stop_bridge()
    publisher = Publisher(
        client, ProducerSettings(redis_url=stack.redis_server.url, maxlen=2_000_000)
    )
    # A channel no client listens to, so later phases never see these events.
    publisher.publish_many({"channel": "backlog", "body": {"t": 0, "n": i}} for i in range(n))
    stack.start_bridge()
    assert stack.bridge is not None
    # Count from the bridge's first read, not from its interpreter start-up.
    wait_for(lambda: _groups(client)[0]["entries-read"], 30, "the first read")
    first = _groups(client)[0]["entries-read"]
    with Sampler(
        {"bridge": stack.bridge.pid, "web": stack.web.pid, "redis": stack.redis_server.process.pid}
    ) as s:
        wait_for(lambda: drained(client), 600, "the backlog to drain")
    done = n - first
    wait_for(lambda: queue_read(client), 600, "the web server to read the queue")
    return {
        "entries": n,
        "timed_entries": done,
        "seconds": round(s.wall, 2),
        "entries_per_s": round(done / s.wall),
        "processes": s.summary(),
    }


def phase_rate(
    stack: Stack,
    clients: Clients,
    kind: str,
    rate: float,
    seconds: float,
    n_clients: int,
    settle_s: float = 10.0,
    pad: int = 0,
) -> dict[str, Any]:
    """``n_clients`` connected clients, ``rate`` events/s for ``seconds``."""
    wait_for(lambda: queue_read(stack.redis()), 120, "a quiet queue")
    producer = Producer(kind, stack, pad)
    clients.report()  # start counting from zero
    pids = {"bridge": stack.bridge.pid, "web": stack.web.pid}  # type: ignore[union-attr]
    with Sampler(pids) as s:
        sent = producer.run(rate, seconds)
        expected = sent * n_clients
        deadline = time.monotonic() + settle_s
        while clients.count() < expected and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the clients' counters, bounded by the deadline
    report = clients.report()
    return {
        "pattern": kind,
        "rate": rate,
        "seconds": seconds,
        "clients": n_clients,
        "sent": sent,
        "deliveries_expected": expected,
        "deliveries": report["received"],
        "delivered_pct": round(100 * report["received"] / expected, 2) if expected else None,
        "deliveries_per_s": round(report["received"] / seconds),
        "latency_ms": report["latency_ms"],
        "loadgen_cpu_pct": report["loadgen_cpu_pct"],
        "shed_reconnects": report["reconnects"],
        "processes": s.summary(),
    }


def phase_deflate(stack: Stack, n_clients: int, rate: float, seconds: float) -> dict[str, Any]:
    """The same load with ~1 KB bodies, permessage-deflate off and on."""
    wait_for(lambda: queue_read(stack.redis()), 120, "a quiet queue")
    out = {}
    for on in (False, True):
        stack.restart_web(STREAMBRIDGE_WEBSOCKET_COMPRESSION="1" if on else "0")
        clients = Clients(stack, 2)
        try:
            clients.connect(n_clients, deflate=on)
            result = phase_rate(stack, clients, "streambridge", rate, seconds, n_clients, pad=1000)
        finally:
            clients.close()
        out["on" if on else "off"] = result
    stack.restart_web()
    return out


def phase_overload(
    stack: Stack, kind: str, rate: float, seconds: float, healthy: int, slow: int, slow_ms: float
) -> dict[str, Any]:
    """Slow clients (``slow_ms`` of work per event) get ``rate`` events/s, about twice
    what they can absorb, for ``seconds``; healthy clients share the server."""
    good = Clients(stack, 2)
    bad = Clients(stack, 1)
    try:
        good.connect(healthy)
        bad.connect(slow, slow_ms=slow_ms, track_ids=True)
        good.report()
        bad.report()
        producer = Producer(kind, stack)
        pids = {"bridge": stack.bridge.pid, "web": stack.web.pid}  # type: ignore[union-attr]
        with Sampler(pids) as s:
            sent = producer.run(rate, seconds)
            deadline = time.monotonic() + 15
            while good.count() < sent * healthy and time.monotonic() < deadline:
                time.sleep(0.1)  # polling, bounded by the deadline
        healthy_report = good.report()
        # Slow clients: give them time to catch up on everything (streambridge) or not.
        recover_deadline = time.monotonic() + 60
        recovered_after = None
        t0 = time.monotonic()
        while time.monotonic() < recover_deadline:
            counts = bad.gens[0].count()
            got = counts["unique_min"] if kind == "streambridge" else counts["per_client_min"]
            if got is not None and got >= sent:
                recovered_after = round(time.monotonic() - t0, 1)
                break
            time.sleep(0.5)  # polling, bounded by the deadline
        slow_report = bad.report()
        web_series = s.series["web"]
        return {
            "pattern": kind,
            "rate": rate,
            "seconds": seconds,
            "healthy_clients": healthy,
            "slow_clients": slow,
            "slow_ms_per_event": slow_ms,
            "sent": sent,
            "healthy_delivered_pct": round(100 * healthy_report["received"] / (sent * healthy), 2),
            "healthy_latency_ms": healthy_report["latency_ms"],
            "healthy_still_connected": healthy_report["connected"],
            "slow_min_unique_events": slow_report["unique_min"],
            # Plain events carry no id: count what arrived instead.
            "slow_recovered_every_event": (
                (slow_report["unique_min"] or 0) >= sent
                if kind == "streambridge"
                else slow_report["per_client_min"] >= sent
            ),
            "slow_recovered_after_s": recovered_after,
            "slow_reconnects": slow_report["reconnects"],
            "web_rss_mb": {
                "start": round(web_series[0], 1),
                "peak": round(max(web_series), 1),
                "end": round(web_series[-1], 1),
            },
            "loadgen_cpu_pct": healthy_report["loadgen_cpu_pct"] + slow_report["loadgen_cpu_pct"],
            "processes": s.summary(),
        }
    finally:
        good.close()
        bad.close()


def phase_bridge_memory(stack: Stack, n: int, step: int) -> dict[str, Any]:
    """Bridge RSS every ``step`` entries while it works through ``n`` entries."""
    from streambridge.publisher import Publisher
    from streambridge.settings import ProducerSettings

    client = stack.redis()
    publisher = Publisher(
        client, ProducerSettings(redis_url=stack.redis_server.url, maxlen=200_000)
    )
    assert stack.bridge is not None
    samples = []
    for done in range(0, n, step):
        publisher.publish_many(
            {"channel": CHANNEL, "body": {"t": 0, "n": done + i}} for i in range(step)
        )
        wait_for(lambda: drained(client), 300, "the bridge to catch up")
        samples.append(round(rss_mb(stack.bridge.pid), 1))
    first_half = samples[len(samples) // 2 :] or samples
    low, high = min(first_half), max(first_half)
    return {
        "entries": n,
        "rss_mb_every_step": samples,
        "step": step,
        "rss_spread_pct_second_half": round(100 * (high - low) / low, 1),
    }


def phase_idle_memory(stack: Stack, connections: int) -> dict[str, Any]:
    """Web server memory per idle connection. A first round of connections warms the
    allocator up (handshake garbage, pools); the figure is the second round's growth."""
    clients = Clients(stack, 2)
    try:
        cold = rss_mb(stack.web.pid)
        clients.connect_in_steps(connections)
        clients.disconnect()
        wait_for(lambda: _connected_metric(stack) == 0, 60, "every client to disconnect")
        before = rss_mb(stack.web.pid)
        clients.connect_in_steps(connections)
        wait_for(lambda: _connected_metric(stack) == connections, 60, "every client connected")
        after = rss_mb(stack.web.pid)
    finally:
        clients.close()
    return {
        "connections": connections,
        "web_rss_cold_mb": round(cold, 1),
        "web_rss_before_mb": round(before, 1),
        "web_rss_after_mb": round(after, 1),
        "kb_per_connection": round((after - before) * 1024 / connections, 1),
        "kb_per_connection_from_cold": round((after - cold) * 1024 / connections, 1),
    }


def _connected_metric(stack: Stack) -> float:
    try:
        text = requests.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).text
    except requests.RequestException:
        return -1.0  # busy with thousands of handshakes: asked again until the deadline
    for line in text.splitlines():
        if line.startswith("streambridge_web_connected_clients "):
            return float(line.split()[1])
    return -1.0


def phase_catch_up(stack: Stack, missed: int) -> dict[str, Any]:
    """A client that missed ``missed`` events reconnects with its last id."""
    from streambridge import keys
    from streambridge.publisher import Publisher
    from streambridge.settings import ProducerSettings

    client = stack.redis()
    publisher = Publisher(
        client, ProducerSettings(redis_url=stack.redis_server.url, maxlen=2_000_000)
    )
    wait_for(lambda: drained(client), 60, "quiet stream")
    publisher.publish_many([{"channel": "other", "body": 0}])
    wait_for(lambda: drained(client), 60, "the bridge")
    [(last, _)] = client.xrevrange(keys.history("events", "/", None), count=1)  # its position
    epoch = client.get("events:epoch")
    publisher.publish_many({"channel": CHANNEL, "body": {"t": 0, "n": i}} for i in range(missed))
    wait_for(lambda: drained(client), 60, "the bridge")
    wait_for(lambda: queue_read(client), 60, "the web server to read the queue")
    clients = Clients(stack, 1)
    try:
        clients.report()
        start = time.monotonic()
        clients.connect(1, auth={"last_id": last, "epoch": epoch}, track_ids=True)
        while clients.count() < missed and time.monotonic() - start < 30:
            time.sleep(0.01)  # polling, bounded by the deadline
        elapsed = time.monotonic() - start
        report = clients.report()
    finally:
        clients.close()
    return {
        "missed": missed,
        "received": report["received"],
        "unique": report["unique_min"],
        "seconds": round(elapsed, 3),
        "recovered": report["recoveries"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run of every phase")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--only", choices=["bridge-memory"], help="run this phase alone (its figures only)"
    )
    return run(parser.parse_args())


def run(args: argparse.Namespace) -> int:
    quick = args.quick
    sizes = {
        "emits": 2_000 if quick else 20_000,
        "backlog": 10_000 if quick else 200_000,
        "clients": 20 if quick else 200,
        "seconds": 1 if quick else 10,
        "saturation_rate": 1_000 if quick else 1_500,
        "overload_seconds": 1.5 if quick else 30,
        "overload_healthy": 18 if quick else 180,
        "overload_slow": 2 if quick else 20,
        "idle_connections": 200 if quick else 2_000,
        "missed": 1_000 if quick else 10_000,
        "memory_entries": 20_000 if quick else 1_000_000,
        "memory_step": 10_000 if quick else 100_000,
    }
    results: dict[str, Any] = {"quick": quick, "sizes": sizes, "machine": machine()}
    if getattr(args, "only", None) == "bridge-memory":
        with tempfile.TemporaryDirectory(prefix="streambridge-bench-") as tmp:
            stack = Stack(Path(tmp)).start({})
            try:
                step("bridge memory")
                results["bridge_memory"] = phase_bridge_memory(
                    stack, sizes["memory_entries"], sizes["memory_step"]
                )
            finally:
                stack.stop()
        print(json.dumps(results["bridge_memory"], indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="streambridge-bench-") as tmp:
        stack = Stack(Path(tmp)).start({})
        try:
            step("emit rate of the plain pattern")
            results["plain_emit"] = phase_emit_rates(stack, sizes["emits"])
            step("bridge backlog")
            results["bridge_backlog"] = phase_bridge_backlog(stack, sizes["backlog"])
            n = sizes["clients"]
            clients = Clients(stack, 2)
            try:
                clients.connect(n)
                results["rates"] = []
                for rate in (50, 500):
                    for kind in ("plain", "streambridge"):
                        step(f"{kind}: {n} clients at {rate} events/s")
                        results["rates"].append(
                            phase_rate(stack, clients, kind, rate, sizes["seconds"], n)
                        )
                results["saturation"] = []
                for kind in ("plain", "streambridge"):
                    rate = sizes["saturation_rate"]
                    step(f"{kind}: saturation, {n} clients at {rate} events/s")
                    results["saturation"].append(
                        phase_rate(stack, clients, kind, rate, sizes["seconds"] / 2, n, 20)
                    )
            finally:
                clients.close()
            step("permessage-deflate off / on")
            guarded(results, "deflate", phase_deflate, stack, n, 50, sizes["seconds"])
            results["overload"] = []
            for kind in ("streambridge", "plain"):
                step(f"{kind}: overload")
                guarded(
                    results,
                    "overload",
                    phase_overload,
                    stack,
                    kind,
                    200,
                    sizes["overload_seconds"],
                    sizes["overload_healthy"],
                    sizes["overload_slow"],
                    10,
                )
            step("catch-up")
            guarded(results, "catch_up", phase_catch_up, stack, sizes["missed"])
            step("idle connections")
            guarded(results, "idle_memory", phase_idle_memory, stack, sizes["idle_connections"])
            step("bridge memory")
            guarded(
                results,
                "bridge_memory",
                phase_bridge_memory,
                stack,
                sizes["memory_entries"],
                sizes["memory_step"],
            )
        finally:
            stack.stop()
    print(table(results))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def step(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


def guarded(results: dict[str, Any], key: str, fn, *args: Any) -> None:
    """Run one phase; a failure is recorded in the results instead of ending the run."""
    try:
        value = fn(*args)
    except Exception as exc:  # report it and go on with the other phases
        print(f"   phase {key} failed: {exc!r}", file=sys.stderr, flush=True)
        value = {"error": repr(exc)}
    if isinstance(results.get(key), list):
        results[key].append(value)
    else:
        results[key] = value


def machine() -> dict[str, Any]:
    import platform

    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": out.stdout.split()[2] if out.stdout else None,
    }


def table(r: dict[str, Any]) -> str:
    rows = []
    backlog = r["bridge_backlog"]
    plain_emit = r["plain_emit"]["plain_emit_events_per_s"]
    rows.append(
        (
            "bridge backlog, entries/s (published + acked)",
            f"{backlog['entries_per_s']:,}",
            f"{plain_emit:,} (emit loop)",
            f"{backlog['entries_per_s'] / plain_emit:.1f}x",
        )
    )
    for key in ("rates", "saturation"):
        pairs = {}
        for phase in r[key]:
            pairs.setdefault(phase["rate"], {})[phase["pattern"]] = phase
        for rate, pair in pairs.items():
            sb, pl = pair["streambridge"], pair["plain"]
            label = f"{sb['clients']} clients @ {rate} ev/s" + (
                " (saturation)" if key == "saturation" else ""
            )
            rows.append(
                (f"{label}: delivered", f"{sb['delivered_pct']}%", f"{pl['delivered_pct']}%", "")
            )
            rows.append(
                (
                    f"{label}: deliveries/s",
                    f"{sb['deliveries_per_s']:,}",
                    f"{pl['deliveries_per_s']:,}",
                    f"{sb['deliveries_per_s'] / max(pl['deliveries_per_s'], 1):.2f}x",
                )
            )
            for q in ("p50", "p95", "p99"):
                rows.append(
                    (
                        f"{label}: latency {q} ms",
                        str(sb["latency_ms"][q]),
                        str(pl["latency_ms"][q]),
                        "",
                    )
                )
            web_cpu, bridge_cpu = (sb["processes"][p]["cpu_s"] for p in ("web", "bridge"))
            rows.append(
                (
                    f"{label}: web CPU s / bridge CPU s",
                    f"{web_cpu} / {bridge_cpu}",
                    f"{pl['processes']['web']['cpu_s']} / -",
                    "",
                )
            )
            rows.append(
                (
                    f"{label}: load generator CPU %",
                    str(sb["loadgen_cpu_pct"]),
                    str(pl["loadgen_cpu_pct"]),
                    "",
                )
            )
    by_kind = {p["pattern"]: p for p in r["overload"]}
    sb, pl = by_kind["streambridge"], by_kind["plain"]
    rows.append(
        (
            "overload: healthy delivered",
            f"{sb['healthy_delivered_pct']}%",
            f"{pl['healthy_delivered_pct']}%",
            "",
        )
    )
    rows.append(
        (
            "overload: healthy p99 ms",
            str(sb["healthy_latency_ms"]["p99"]),
            str(pl["healthy_latency_ms"]["p99"]),
            "",
        )
    )
    rows.append(
        (
            "overload: slow clients got every event",
            str(sb["slow_recovered_every_event"]),
            str(pl["slow_recovered_every_event"]),
            "",
        )
    )
    rows.append(
        (
            "overload: web RSS start/peak/end MB",
            "/".join(str(v) for v in sb["web_rss_mb"].values()),
            "/".join(str(v) for v in pl["web_rss_mb"].values()),
            "",
        )
    )
    idle = r["idle_memory"]
    rows.append(
        (
            f"web memory per idle connection ({idle['connections']})",
            f"{idle['kb_per_connection']} KB",
            "",
            "",
        )
    )
    cu = r["catch_up"]
    rows.append((f"catch-up of {cu['missed']:,} missed events", f"{cu['seconds']} s", "", ""))
    deflate = r.get("deflate", {})
    if "on" in deflate:
        off, on = deflate["off"], deflate["on"]
        rows.append(
            (
                "deflate off/on (1 KB bodies, 50 ev/s): web CPU s",
                f"{off['processes']['web']['cpu_s']} / {on['processes']['web']['cpu_s']}",
                "",
                "",
            )
        )
        rows.append(
            (
                "deflate off/on: p99 ms",
                f"{off['latency_ms']['p99']} / {on['latency_ms']['p99']}",
                "",
                "",
            )
        )
    mem = r["bridge_memory"]
    rows.append(
        (
            f"bridge RSS across {mem['entries']:,} entries (2nd half spread)",
            f"{mem['rss_spread_pct_second_half']}%",
            "",
            "",
        )
    )
    width = max(len(row[0]) for row in rows)
    lines = [f"{'figure':<{width}}  {'streambridge':>16}  {'plain':>22}  ratio", "-" * (width + 50)]
    lines += [f"{a:<{width}}  {b:>16}  {c:>22}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
