"""``streambridge dev``, what the README's first command runs: the whole system on one
machine with an embedded Redis, a demo user that can log in, and SIGTERM stopping every
part of it."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from tests.support import Client, Web, clean_env, cli

pytestmark = pytest.mark.integration


class Dev(Web):
    subcommand = ("dev",)

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        super().__init__(env, directory, "dev")
        self.cwd = directory  # its state (the embedded Redis's data) goes in ./.streambridge

    def printed(self, label: str) -> str:
        match = re.search(rf"^\s+{label}: (\S+)$", self.output(), re.MULTILINE)
        assert match, f"dev printed no {label}:\n{self.output()[-3000:]}"
        return match.group(1)


def test_dev_runs_the_whole_system_and_sigterm_stops_every_part(tmp_path, processes, clients):
    dev = Dev(clean_env(), tmp_path)  # no REDIS_URL: it starts its own Redis
    processes.append(dev)
    parts: list[psutil.Process] = []
    try:
        dev.start()
        dev.wait_log("Ctrl-C stops everything")
        parts = psutil.Process(dev.process.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in parts)
        assert "redis-server" in names and " bridge" in names and " web " in names, names
        redis_url = dev.printed("redis")
        assert (tmp_path / ".streambridge" / "redis").is_dir()
        assert dev.printed("dashboard") == dev.url + "/streambridge/dashboard"

        session = dev.login(dev.printed("user"), dev.printed("password"))
        demo = Client().connect(dev, session)
        clients.append(demo)
        published = cli(clean_env(REDIS_URL=redis_url), "publish", "message", '"hello"')
        assert published.returncode == 0, published.stderr
        [(_, body, meta)] = demo.wait_for(1, "message")
        assert body == "hello" and meta["entry"] == published.stdout.strip()
        assert session.get(dev.url + "/streambridge/dashboard", timeout=5).status_code == 200

        assert dev.terminate() == 0
        _, left = psutil.wait_procs(parts, timeout=10)
        assert left == [], left
        for event in ("web.stopped", "bridge.stopped", "dev.stopped"):
            assert event in dev.output(), event
    finally:
        # Also when the start failed: dev's children would outlive its SIGKILL.
        if dev.alive():
            parts += psutil.Process(dev.process.pid).children(recursive=True)
        for part in parts:
            if part.is_running():
                part.kill()
