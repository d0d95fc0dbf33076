"""Operations: systemd units, compose file, health, metrics, sd_notify, scale-out."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from streambridge.embedded_redis import RedisServer, free_port
from streambridge.ids import StreamId
from tests.support import (
    RECOVERY,
    ROOT,
    Bridge,
    Client,
    Web,
    cli,
    start_together,
    terminate_bridge_now,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    exe = Path(sys.executable).parent / "streambridge"
    env_file = tmp_path / "streambridge.env"
    env_file.write_text("REDIS_URL=redis://127.0.0.1:6379/0\n")
    units = []
    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        text = unit.read_text()
        assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
        assert "PrivateTmp=yes" in text and "User=streambridge" in text
        assert "Restart=always" in text and "EnvironmentFile=" in text
        text = text.replace("/opt/streambridge/.venv/bin/streambridge", str(exe))
        text = text.replace("/etc/streambridge/streambridge.env", str(env_file))
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    assert len(units) == 2
    out = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    problems = [line for line in out.stderr.splitlines() if "streambridge" in line]
    assert out.returncode == 0 and not problems, out.stderr


def test_compose_file_and_dockerfile_hold_together():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "web", "bridge"}
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]
    for name in ("redis", "web", "bridge"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("web", "bridge"):
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["bridge"]["healthcheck"]["test"][1:] == ["streambridge", "bridge", "--check"]
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_bridge_tells_systemd_ready_and_stopping(env, tmp_path, processes):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        bridge = Bridge(dict(env, NOTIFY_SOCKET=path), tmp_path)
        processes.append(bridge)
        bridge.start(wait=False)
        assert sock.recv(100) == b"READY=1"
        assert bridge.terminate() == 0
        assert sock.recv(100) == b"STOPPING=1"


def test_bridge_metrics_and_health_check(env, tmp_path, processes, redis_client):
    port = free_port()
    bridge = Bridge(dict(env, STREAMBRIDGE_METRICS_PORT=str(port)), tmp_path)
    processes.append(bridge)
    bridge.start()
    for n in range(3):
        redis_client.xadd("events", {"channel": "m", "body": str(n)})
    redis_client.xadd("events", {"channel": "bad name", "body": "1"})

    def metric(name: str) -> float | None:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.split(" ")[0] == name:
                return float(line.split()[-1])
        return None

    wait_until(lambda: metric('streambridge_bridge_entries_total{outcome="acked"}') == 4, 10,
               "4 acked in metrics")  # fmt: skip
    assert metric('streambridge_bridge_entries_total{outcome="emitted"}') == 3
    assert metric('streambridge_bridge_entries_total{outcome="dead"}') == 1
    assert metric("streambridge_bridge_batch_seconds_count") >= 1

    def check(consumer: str) -> int:
        return cli(env, "bridge", "--check", "--consumer", consumer).returncode

    wait_until(lambda: check("bridge") == 0, 5, "the bridge to be alive")
    assert check("no-such-bridge") == 1


def test_web_health_readiness_and_metrics(env, tmp_path, processes, bridge, clients, redis_client):
    server = RedisServer(tmp_path / "own-redis").start()
    try:
        web = Web(dict(env, REDIS_URL=server.url), tmp_path, name="web-own", metrics=True)
        processes.append(web)
        web.start()
        assert requests.get(web.url + "/readyz", timeout=5).status_code == 200
        session = web.login("alice")
        client = Client().connect(web, session)
        clients.append(client)
        client.wait_for(1, RECOVERY)  # sent after the recovery is counted
        session.post(web.url + "/api/", json={"channel": "m", "body": 1}, timeout=5)
        session.post(web.url + "/api/", json={"body": 1}, timeout=5)
        assert web.metric("streambridge_web_connected_clients ") == 1.0
        assert web.metric('streambridge_web_api_requests_total{status="200"}') == 1.0
        assert web.metric('streambridge_web_api_requests_total{status="400"}') == 1.0
        assert web.metric('streambridge_web_recoveries_total{recovered="true"}') == 1.0
        # Not on the app's own port, where anyone who reaches the app could read them.
        assert requests.get(web.url + "/metrics", timeout=5).status_code == 404
        server.kill()
        wait_until(lambda: requests.get(web.url + "/readyz", timeout=5).status_code == 503, 10,
                   "readyz to report Redis down")  # fmt: skip
        assert requests.get(web.url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


def test_scale_out_two_webs_two_bridges_one_of_each_stopped(
    env, tmp_path, processes, clients, redis_client
):
    webs = [Web(env, tmp_path, name=f"web-{i}") for i in (1, 2)]
    bridges = [Bridge(env, tmp_path, name=f"bridge-{i}") for i in (1, 2)]
    processes.extend(webs + bridges)
    start_together(*webs, *bridges)
    on_1 = [Client().connect(webs[0], webs[0].login(u)) for u in ("alice", "bob")]
    on_2 = [Client().connect(webs[1], webs[1].login(u)) for u in ("alice", "bob")]
    clients.extend(on_1 + on_2)

    produced = [redis_client.xadd("events", {"channel": "t", "body": str(n)}) for n in range(300)]
    for c in on_1 + on_2:
        wait_until(lambda c=c: set(c.ids("t")) >= set(produced), 20, "first half everywhere")

    assert terminate_bridge_now(bridges[0], redis_client) == 0
    assert webs[0].terminate() == 0
    # Where each client is: its highest id (two bridges may deliver out of order), as
    # the page and streambridge.js keep it.
    last = {id(c): max((m for _, _, m in c.received("t")), key=lambda m: StreamId.parse(m["id"]))
            for c in on_1}  # fmt: skip
    more = [redis_client.xadd("events", {"channel": "t", "body": str(n)}) for n in range(300, 600)]
    everything = produced + more
    for c in on_2:  # clients of the surviving server never noticed
        wait_until(lambda c=c: set(c.ids("t")) >= set(everything), 20, "every event on web-2")
        # Two bridges publish concurrently, so arrival order may interleave; the page
        # (streambridge.js users) orders by id. Nothing is missing, nothing is foreign.
        assert sorted(set(c.ids("t"))) == sorted(everything)
    for c, user in zip(on_1, ("alice", "bob"), strict=True):  # the others move over
        meta = last[id(c)]
        moved = Client().connect(webs[1], webs[1].login(user),
                                 auth={"last_id": meta["id"], "epoch": meta["epoch"]})  # fmt: skip
        clients.append(moved)
        wait_until(lambda m=moved: set(m.ids("t")) >= set(more), 20, "catch-up on web-2")
        assert moved.ids("t") == more
    wait_until(lambda: redis_client.xpending("events", "bridge")["pending"] == 0, 10, "acked")


def test_web_exits_on_sigterm_despite_a_half_sent_request(env, tmp_path, processes):
    """A client that stops halfway through its request cannot keep the server up."""
    web = Web(dict(env, STREAMBRIDGE_SHUTDOWN_GRACE_S="1"), tmp_path)
    processes.append(web.start())
    stalled = socket.create_connection(("127.0.0.1", web.port))
    try:
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        wait_until(lambda: requests.get(web.url + "/healthz", timeout=2).ok, 5, "web serving")
        assert web.terminate(timeout=10) == 0
    finally:
        stalled.close()
    [cut] = web.log_events("web.connections_cut")
    assert cut["connections"] == 1
    assert sum(cut["waiting_in"].values()) == 1  # where it was stuck, for the operator
    assert web.log_events("web.stopped")
