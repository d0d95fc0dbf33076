"""``flask streambridge ...`` in a host app, against a real redis-server: the settings
come from the app's StreamBridge extension, and the ``flask.commands`` entry point
makes the group appear under ``flask`` (the package must be installed, e.g. ``pip
install -e .``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.cli import FlaskGroup
from streambridge.webapp.ext.extension import StreamBridge

from streambridge.commands import flask_commands
from streambridge.embedded_redis import RedisServer
from tests.support import ROOT, clean_env

pytestmark = pytest.mark.integration

FLASK = str(Path(sys.executable).parent / "flask")
DEAD = {"channel": "m", "body": '"fixed"', "reason": "r", "original_id": "1-1", "consumer": "c"}


def host_app(redis_url: str, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="s" * 40, REDIS_URL=redis_url, STREAMBRIDGE_ASYNC_MODE="threading", **config
    )
    StreamBridge(app)
    return app


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """The environment names a Redis where nothing listens: only the app's URL works."""
    monkeypatch.setenv("REDIS_URL", RedisServer(tmp_path / "never-started").url)


def test_status_dead_and_publish_use_the_app_settings(redis_server, redis_client, elsewhere):
    app = host_app(redis_server.url, STREAMBRIDGE_STREAM="app-events")
    runner = app.test_cli_runner()

    def invoke(*args: str):
        return runner.invoke(flask_commands, list(args))

    published = invoke("publish", "message", '{"n": 1}', "--room", "user:alice")
    assert published.exit_code == 0, published.output
    [(stream_id, fields)] = redis_client.xrange("app-events")
    assert published.stdout.strip() == stream_id
    assert fields == {"channel": "message", "body": '{"n": 1}', "room": "user:alice"}

    dead_id = redis_client.xadd("app-events:dead", DEAD)
    status = invoke("status", "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert (data["stream"], data["length"], data["dead_letters"]) == ("app-events", 1, 1)
    assert "dead letters  1" in invoke("status").stdout

    listed = invoke("dead", "list", "--json")
    assert [d["id"] for d in json.loads(listed.stdout)] == [dead_id]
    assert invoke("dead", "requeue").exit_code == 2
    missing = invoke("dead", "requeue", dead_id, "1-1")
    assert missing.exit_code == 1 and "no dead letter 1-1" in missing.stderr
    requeued = invoke("dead", "requeue", "--all")
    assert requeued.exit_code == 0, requeued.output
    [(moved, arrow, new_id)] = [line.split() for line in requeued.stdout.splitlines()]
    assert (moved, arrow) == (dead_id, "->")
    original = {"channel": "m", "body": '"fixed"'}
    assert redis_client.xrange("app-events", new_id, new_id) == [(new_id, original)]
    assert redis_client.xlen("app-events:dead") == 0

    refused = invoke("publish", "message", "not json")
    assert refused.exit_code == 2 and "BODY is not JSON" in refused.stderr


def test_an_unreachable_redis_is_a_clean_error(tmp_path):
    down = RedisServer(tmp_path / "down")  # never started
    result = host_app(down.url).test_cli_runner().invoke(flask_commands, ["status"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach Redis")


def test_without_the_extension_the_environment_is_read(redis_server, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("STREAMBRIDGE_STREAM", "env-events")
    runner = Flask(__name__).test_cli_runner()
    assert runner.invoke(flask_commands, ["publish", "m", "1"]).exit_code == 0
    assert redis_client.xlen("env-events") == 1


def test_the_entry_point_adds_the_group_to_flask(redis_server, redis_client, elsewhere):
    app = host_app(redis_server.url)
    redis_client.xadd("events", {"channel": "m", "body": "1"})
    runner = app.test_cli_runner()
    result = runner.invoke(FlaskGroup(create_app=lambda: app), ["streambridge", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["length"] == 1


def flask_in_the_host_example(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    """Run the installed ``flask`` command on examples/host_app, as a user would."""
    return subprocess.run(
        [FLASK, "--app", "examples/host_app/app.py", "streambridge", *args],
        env=clean_env(REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_flask_lists_the_commands_of_the_host_example(redis_server):
    out = flask_in_the_host_example(redis_server.url, "--help")
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines() if line]
    assert listed == ["status", "dead", "publish"]


def test_flask_streambridge_status_in_the_host_example(redis_server, redis_client):
    redis_client.xadd("events", {"channel": "m", "body": "1"})
    out = flask_in_the_host_example(redis_server.url, "status", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["length"] == 1
