"""A port free_port() found free can be taken before the server binds it: the suite's
Web helper and the benchmarks' start_server choose again; other failures still fail."""

from __future__ import annotations

import socket
import subprocess

import pytest

import bench.run
import tests.support as support
from streambridge import embedded_redis
from streambridge.embedded_redis import RedisServer
from tests.support import Web, start_together

pytestmark = pytest.mark.integration


def test_a_web_whose_chosen_port_is_taken_starts_on_another(env, tmp_path, monkeypatch):
    with socket.socket() as holder:
        taken = held_port_first(monkeypatch, support, holder)
        web = Web(env, tmp_path).start()
    try:
        assert web.port != taken
        assert f"cannot listen on 127.0.0.1:{taken}" in web.output()  # the first try
    finally:
        web.terminate()


def test_a_port_the_test_gave_is_not_changed(env, tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        web = Web(env, tmp_path, port=holder.getsockname()[1])
        with pytest.raises(AssertionError, match="exited"):
            web.start()


def first_port(monkeypatch, module, port: int) -> None:
    """``module.free_port`` answers ``port`` once, then as before."""
    ports = iter([port])
    real = module.free_port
    monkeypatch.setattr(module, "free_port", lambda: next(ports, None) or real())


def held_port_first(monkeypatch, module, holder: socket.socket) -> int:
    """``module.free_port`` answers the port ``holder`` listens on once, then as before."""
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    first_port(monkeypatch, module, taken)
    return taken


def test_a_benchmark_server_whose_port_is_taken_starts_on_another(env, tmp_path, monkeypatch):
    log = tmp_path / "web.log"
    with socket.socket() as holder:
        taken = held_port_first(monkeypatch, bench.run, holder)
        proc, port, _ = bench.run.start_web(env, log)
    try:
        assert port != taken
        assert f"cannot listen on 127.0.0.1:{taken}" in log.read_text()
    finally:
        bench.run.stop_processes([proc])


def test_a_benchmark_server_that_fails_otherwise_is_not_tried_again(env, tmp_path):
    log = tmp_path / "web.log"
    started = []

    def spawn(port: int) -> subprocess.Popen:
        without_key = {k: v for k, v in env.items() if k != "STREAMBRIDGE_SECRET_KEY"}
        started.append(bench.run.spawn(["web", "--port", str(port)], without_key, log))
        return started[-1]

    with pytest.raises(RuntimeError, match="STREAMBRIDGE_SECRET_KEY is not set"):
        bench.run.start_server("web", spawn, log)
    assert len(started) == 1


def test_webs_started_together_choose_again_too(env, tmp_path, monkeypatch):
    with socket.socket() as holder:
        taken = held_port_first(monkeypatch, support, holder)
        web = Web(env, tmp_path)
        start_together(web)
    try:
        assert web.port != taken and web.alive()
    finally:
        web.terminate()


def test_a_redis_server_whose_port_another_redis_holds_starts_on_another(
    redis_server, tmp_path, monkeypatch
):
    # The other server answers PING on that port while ours is still starting: ours
    # must not take its answer for its own.
    first_port(monkeypatch, embedded_redis, redis_server.port)
    ours = RedisServer(tmp_path / "ours").start()
    try:
        assert ours.port != redis_server.port
        assert ours.client().info("server")["process_id"] == ours.process.pid
        assert "Address already in use" in (tmp_path / "ours" / "redis.log").read_text()
    finally:
        ours.stop()
