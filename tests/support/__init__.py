"""Helpers for integration tests: real processes, real clients, waits with deadlines."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
import requests
import socketio
from streambridge.webapp.ext.catchup import RECOVERY_EVENT

from streambridge import keys
from streambridge.embedded_redis import free_port
from streambridge.ids import StreamId

ROOT = Path(__file__).resolve().parents[2]
SOCKETIO_PATH = "/ws/socket.io"
PASSWORDS = {
    "alice": "alice-password",
    "bob": "bob-password",
    "carol": "carol-password",
    "dora": "dora-password",  # an admin, where a test makes her one
}
RECOVERY = RECOVERY_EVENT  # the server's recovery notice, as clients see it


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf[-_]token" (?:content|value)="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


CLI = (sys.executable, "-m", "streambridge.cli")
"""The ``streambridge`` command, as this checkout's Python runs it."""


def cli(env: dict[str, str], *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """``streambridge <args>`` as a process, with its output captured."""
    return subprocess.run(
        [*CLI, *args],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=30, check=check,
    )  # fmt: skip


REPORTS: list[str] = []
"""Figures a test measured (not pass/fail), printed at the end of the run."""


def report(line: str) -> None:
    REPORTS.append(line)


TEST_ASYNC_MODE = "STREAMBRIDGE_TEST_ASYNC_MODE"
"""Environment variable: the async mode of the web servers the tests start."""


def clean_env(**settings: str) -> dict[str, str]:
    """The environment for a child process: ours minus any streambridge/Redis settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAMBRIDGE_") and k != "REDIS_URL"
    }
    env.update({"STREAMBRIDGE_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    # The suite runs once per async mode (scripts/test.sh): the web servers it starts
    # take this one, unless a test asks for another.
    mode = os.environ.get(TEST_ASYNC_MODE)
    if mode:
        env["STREAMBRIDGE_ASYNC_MODE"] = mode
    env.update(settings)
    return env


PORT_TAKEN = ("Address already in use", "EADDRINUSE")
"""How a server (Python, Node, streambridge's ``cannot listen`` line) says that its port
was taken: one that free_port() found free can be taken before the server binds it (by
another process, or as the local port of a connection), and is then chosen again."""


def listens(process: subprocess.Popen | None, port: int) -> bool:
    """``process`` (or a process it started: ``streambridge dev``) listens on ``port``."""
    if process is None:
        return False
    try:
        parent = psutil.Process(process.pid)
        if _listens_itself(parent, port):
            return True
        return any(_listens_itself(child, port) for child in parent.children(recursive=True))
    except psutil.AccessDenied:  # cannot tell: trust the answer
        return True
    except psutil.Error:  # exited meanwhile
        return False


def _listens_itself(proc: psutil.Process, port: int) -> bool:
    conns = proc.net_connections(kind="tcp")
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def serves(process: subprocess.Popen | None, port: int, path: str) -> bool:
    """``path`` on ``port`` answers 200, and ``process`` is who listens there (whoever
    answers may be another server)."""
    try:
        answered = requests.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code
    except requests.RequestException:
        return False
    return answered == 200 and listens(process, port)


class Proc:
    """A ``streambridge`` subprocess whose output goes to a log file."""

    python, *command = CLI
    cwd = ROOT

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.log_start = 0  # where the output of the last start begins
        self.process: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.log_start = len(self.output())
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.python, *self.command, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )
        log.close()
        return self

    def wait_ready(self) -> Proc:
        """Wait until the process ``start`` launched can be used (each kind says how)."""
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self, event: str, after: int = 0) -> list[dict]:
        """The JSON log records named ``event`` (other lines are skipped)."""
        records = []
        for line in self.output()[after:].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                records.append(record)
        return records

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_log(self, text: str, timeout: float = 15.0, after: int = 0) -> None:
        def seen() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.output()[-3000:]}")
            return text in self.output()[after:]

        wait_until(seen, timeout, f"{text!r} in {self.name} log")

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Web(Proc):
    subcommand: tuple[str, ...] = ("web",)
    health_path = "/healthz"

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        name: str = "web",
        port: int = 0,
        *,
        metrics: bool = False,
    ):
        super().__init__(name, [], env, log_dir)
        self.base_env = env
        self.port_given = bool(port)
        self.metrics = metrics
        self.choose_ports(port)

    def choose_ports(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.metrics_port = free_port() if self.metrics else None
        self.env = self.base_env
        if self.metrics_port is not None:
            self.env = dict(self.env, STREAMBRIDGE_METRICS_PORT=str(self.metrics_port))
        self.args = [*self.subcommand, "--host", "127.0.0.1", "--port", str(self.port)]

    def metric(self, line_start: str) -> float | None:
        """The value of the first metrics line that starts with ``line_start``."""
        assert self.metrics_port is not None, "start this Web with metrics=True"
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.split()[-1])
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Web:
        super().start()
        return self.wait_ready()

    def wait_ready(self) -> Web:
        """Wait until the process started by ``start`` (or ``Proc.start``) answers. A
        port free_port() found free can be taken before the server binds it (by another
        process, or as the local port of a connection): then it is started again on
        other ports. Not so a port the test gave (a restart on the same address)."""
        for _ in range(3):
            try:
                return self._wait_answering()
            except AssertionError:
                if self.alive() or self.port_given or not self.lost_its_port():
                    raise
            self.choose_ports()
            Proc.start(self)
        raise AssertionError(f"{self.name}: its port was taken three times in a row")

    def lost_its_port(self) -> bool:
        return any(sign in self.output()[self.log_start :] for sign in PORT_TAKEN)

    def _wait_answering(self) -> Web:
        def healthy() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.output()[-3000:]}")
            return serves(self.process, self.port, self.health_path)

        wait_until(healthy, 20, f"{self.name} {self.health_path}")
        return self

    def login(self, user: str, password: str | None = None) -> requests.Session:
        """Log in through the form, as a browser does; the session then sends the
        page's CSRF token with every request (as the page's scripts do)."""
        session = requests.Session()
        session.headers["Origin"] = self.url
        form = session.get(self.url + "/login", timeout=5).text
        response = session.post(
            self.url + "/login",
            data={
                "username": user,
                "password": password or PASSWORDS.get(user, ""),
                "csrf_token": csrf_token(form),
            },
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 302, response.text
        session.headers["X-CSRFToken"] = csrf_token(session.get(self.url + "/", timeout=5).text)
        return session


class HostApp(Web):
    """examples/host_app: a Flask-Login app that embeds streambridge."""

    command = ("examples/host_app/app.py",)
    subcommand = ()
    health_path = "/login"
    password = "host-app-test-password"

    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "host-app", port: int = 0):
        env = dict(env, HOST_APP_PASSWORD=self.password, SECRET_KEY="h" * 40)
        super().__init__(env, log_dir, name, port)

    def login(self, user: str, password: str | None = None) -> requests.Session:
        session = requests.Session()
        response = session.post(
            self.url + "/login",
            data={"name": user, "secret": password or self.password},
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 302, response.text
        return session


class Bridge(Proc):
    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "bridge"):
        super().__init__(name, ["bridge", "--consumer", name], env, log_dir)

    def start(self, wait: bool = True) -> Bridge:
        super().start()
        return self.wait_ready() if wait else self

    def wait_ready(self) -> Bridge:
        self.wait_log('"bridge.all_ready"')
        return self


def terminate_bridge_now(bridge: Bridge, client: redis.Redis, timeout: float = 10.0) -> int:
    """SIGTERM, as ``terminate``; and the read the bridge is blocked in (XREADGROUP with
    BLOCK, 2 s by default) is ended as if its block had run out (CLIENT UNBLOCK), so
    that it stops now instead of when the block would have ended. For tests in which the
    stop is a step, not what is tested. Returns the exit code."""
    assert bridge.process is not None
    bridge.process.send_signal(signal.SIGTERM)

    def stopped() -> bool:
        if bridge.process.poll() is not None:
            return True
        try:
            conns = psutil.Process(bridge.process.pid).net_connections(kind="tcp")
        except psutil.Error:  # exiting
            return bridge.process.poll() is not None
        its = {f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.laddr}
        for info in client.client_list():
            # Unblocked before the bridge has seen the signal, it would read again:
            # asked again (every 20 ms) until it has stopped.
            if info["addr"] in its and info["cmd"] == "xreadgroup" and "b" in info["flags"]:
                client.client_unblock(info["id"])
        return False

    wait_until(stopped, timeout, f"{bridge.name} to stop")
    return bridge.process.wait()


class Client:
    """A python-socketio client that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        # engine.io's client runs each message handler in a new thread, which loses the
        # order messages arrived in; these tests check order, so handle them in the
        # read loop, as a browser does.
        trigger = self.sio.eio._trigger_event
        self.sio.eio._trigger_event = lambda event, *a, run_async=False, **kw: trigger(
            event, *a, run_async=False, **kw
        )
        self.events: list[tuple[str, Any, Any]] = []
        self.lock = threading.Lock()
        self.connect_errors: list[Any] = []
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self.connect_errors.append)

    def _record(self, event: str, *args: Any) -> None:
        body = args[0] if args else None
        meta = args[1] if len(args) > 1 else None
        with self.lock:
            self.events.append((event, body, meta))

    def connect(
        self,
        web: Web,
        session: requests.Session | None = None,
        auth=None,
        origin: str | None = None,
    ) -> Client:
        """``origin``: the Origin header of the WebSocket handshake (websocket-client
        writes its own; a second header would be a different request)."""
        headers = {}
        if session is not None:
            headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        if origin is not None:
            self.sio.eio.websocket_extra_options = {"origin": origin}
        self.sio.connect(
            web.url,
            headers=headers,
            auth=auth,
            socketio_path=SOCKETIO_PATH,
            transports=["websocket"],
            wait_timeout=10,
        )
        return self

    def received(self, channel: str | None = None) -> list[tuple[str, Any, Any]]:
        with self.lock:
            return [e for e in self.events if channel is None or e[0] == channel]

    def bodies(self, channel: str = "message") -> list:
        """The bodies of the events received on ``channel``, in order."""
        return [body for _, body, _ in self.received(channel)]

    def positions(self) -> dict[str, dict[str, str]]:
        """What streambridge.js sends on reconnect: per shard, the newest position and
        its epoch (from the recovery event, then every stream event)."""
        at: dict[str, dict[str, str]] = {}
        for _, info, _ in self.received(RECOVERY):
            at.update(info["positions"])
        for _, _, meta in self.received():
            if not isinstance(meta, dict) or "entry" not in meta:
                continue
            shard = str(meta.get("shard", 0))
            if shard not in at or StreamId.parse(meta["id"]) > StreamId.parse(at[shard]["last_id"]):
                at[shard] = {"last_id": meta["id"], "epoch": meta["epoch"]}
        return at

    def ids(self, channel: str | None = None) -> list[str]:
        """The stream ids (``meta.entry``: what producers got back) of events received."""
        return [m["entry"] for _, _, m in self.received(channel) if isinstance(m, dict)]

    def wait_for(self, count: int, channel: str | None = None, timeout: float = 10.0):
        wait_until(
            lambda: len(self.received(channel)) >= count,
            timeout,
            f"{count} event(s) on {channel or 'any channel'}",
        )
        return self.received(channel)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
        # python-engineio's client leaves the WebSocket of a connection the server ended
        # open (a ResourceWarning later, in another test).
        ws = getattr(self.sio.eio, "ws", None)
        if ws is not None:
            ws.shutdown()


class PacedProducer:
    """XADDs ``limit`` events to ``channel`` (in ``room``) on a thread, about ``rate`` per
    second, until stopped; ``ids`` grows as it goes."""

    def __init__(
        self, client, channel: str, limit: int, rate: float = 50.0, room: str | None = None
    ) -> None:
        self.client = client
        self.channel = channel
        self.room = room
        self.limit = limit
        self.interval = 1 / rate
        self.ids: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for n in range(self.limit):
            if self.stopping.is_set():
                return
            fields = {"channel": self.channel, "body": str(n)}
            if self.room is not None:
                fields["room"] = self.room
            self.ids.append(self.client.xadd("events", fields))
            self.stopping.wait(self.interval)  # pacing the producer

    def start(self) -> PacedProducer:
        self.thread.start()
        return self

    def join(self, timeout: float = 20) -> None:
        self.thread.join(timeout)

    def __enter__(self) -> PacedProducer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()


def start_together(*procs: Proc) -> None:
    """Start these new processes at once (their start-ups, mostly imports, overlap on the
    cores), then wait for each as its own ``start`` does: a web server until it
    answers, a bridge until it says it is ready."""
    for proc in procs:
        Proc.start(proc)
    for proc in procs:
        proc.wait_ready()


def start_web(env: dict[str, str], tmp_path: Path, processes: list, name: str, **settings: str):
    """A ``streambridge web`` with these extra settings, stopped at the end of the test."""
    proc = Web(dict(env, **settings), tmp_path, name=name)
    processes.append(proc)
    return proc.start()


def open_socket(clients: list, web: Web, session: requests.Session | None, **kwargs) -> Client:
    """A connected Client, closed at the end of the test even if the connect fails."""
    client = Client()
    clients.append(client)
    return client.connect(web, session, **kwargs)


def from_the_start(redis_client) -> dict:
    """The auth of a client whose position is before the stream's first entry."""
    return {"last_id": "0-0", "epoch": redis_client.get("events:epoch")}


def positions_of(client, room: str | None = None, namespace: str = "/", stream: str = "events"):
    """The positions (``meta.id``) of the events in ``room``'s history, oldest first."""
    return [position for position, _ in client.xrange(keys.history(stream, namespace, room))]


def all_published(client, stream: str = "events", group: str = "bridge") -> bool:
    """Every entry of ``stream`` read by the bridges and acked: published, and in its
    room's history. False while Redis cannot be asked."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.RedisError:
        return False
    found = [g for g in groups if g["name"] == group]
    return bool(found) and found[0]["lag"] == 0 and found[0]["pending"] == 0


def dead_letter(client, body: str = '"x"', stream: str = "events") -> str:
    """A dead letter of a valid event, as a bridge leaves one the queue did not take."""
    fields = {"channel": "message", "body": body, "reason": "queue down", "original_id": "1-1"}
    return client.xadd(f"{stream}:dead", {**fields, "consumer": "old"})
