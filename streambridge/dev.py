"""``streambridge dev``: Redis (embedded unless REDIS_URL is set), bridge and web app
on this machine, a demo user with a fresh password; Ctrl-C stops them all."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import structlog

from streambridge.settings import CommonSettings, WebSettings

log = structlog.get_logger("dev")
STATE_DIR = Path(".streambridge")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def run(args: Any) -> int:
    """``args``: the command's options (``host``, ``port``, ``user``)."""
    common = CommonSettings()
    web_defaults = WebSettings(dev=True)
    host = args.host or web_defaults.host
    port = args.port or web_defaults.port
    STATE_DIR.mkdir(exist_ok=True)
    redis_server = None
    if "redis_url" in common.model_fields_set:
        redis_url = common.redis_url
    else:
        from streambridge.embedded_redis import RedisServer

        redis_server = RedisServer(STATE_DIR / "redis").start()
        redis_url = redis_server.url
        log.info("dev.embedded_redis", url=redis_url, binary=redis_server.binary)

    users_file = STATE_DIR / "users.json"
    password = secrets.token_urlsafe(12)
    from streambridge.webapp.app.users import UserStore

    # Its pages may subscribe to team rooms (and see who else is there); it is the
    # operator of this machine's system, so it sees the dashboard.
    UserStore(users_file).add(args.user, password, subscribe=["team:*"], admin=True)
    env = {
        "REDIS_URL": redis_url,
        "STREAMBRIDGE_USERS_FILE": str(users_file.resolve()),
        "STREAMBRIDGE_SECRET_KEY": secrets.token_hex(32),
        "STREAMBRIDGE_DEV": "1",
    }

    child_env = {**os.environ, **env}
    exe = [sys.executable, "-m", "streambridge.cli"]
    children = {
        "bridge": subprocess.Popen([*exe, "bridge"], env=child_env),
        "web": subprocess.Popen([*exe, "web", "--host", host, "--port", str(port)], env=child_env),
    }
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        url = f"http://{shown_host}:{port}/"
        if _wait_http(url + "healthz", children, lambda: stopping):
            print(
                f"\n  streambridge is running: {url}\n"
                f"  user: {args.user}\n  password: {password}\n"
                f"  dashboard: {url.rstrip('/')}{web_defaults.dashboard_path or ' (off)'}\n"
                f"  redis: {redis_url}\n"
                f"  try: streambridge publish message '\"hello\"'  (with REDIS_URL={redis_url})\n"
                "  Ctrl-C stops everything.\n",
                flush=True,
            )
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    log.error("dev.child_exited", process=name, code=child.returncode)
                    stopping, code = True, 1
            time.sleep(0.2)
    finally:
        _stop(children)
        if redis_server is not None:
            redis_server.stop()
        log.info("dev.stopped")
    return code


def _wait_http(url: str, children: dict, stopping) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stopping():
        if any(c.poll() is not None for c in children.values()):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, child in children.items():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("dev.killing", process=name)
            child.kill()
            child.wait()
