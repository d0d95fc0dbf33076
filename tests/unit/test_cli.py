"""The ``streambridge`` command and ``flask streambridge`` (streambridge/commands.py):
parsing, exit statuses, lazy imports and where the settings come from (fakeredis)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from flask import Flask
from streambridge.producers import cli as producer_cli

from streambridge import commands
from streambridge.cli import main
from streambridge.settings import CommonSettings, WebSettings
from tests.support import ROOT

ORDER = ["dev", "web", "bridge", "publish", "user", "status", "dead"]


@pytest.fixture(autouse=True)
def _no_monkey_patching(monkeypatch):
    """``main(["web", ...])`` would patch this test process for eventlet: not here."""
    monkeypatch.setattr("streambridge.async_mode.prepare", lambda: "eventlet")


@pytest.fixture
def configured(monkeypatch) -> list[tuple[str, str]]:
    """Logging set-ups asked for (not done: the test process keeps its own logging)."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "streambridge.logging_setup.configure", lambda level, fmt: calls.append((level, fmt))
    )
    return calls


@pytest.fixture
def redis(fake, monkeypatch, configured):
    """Every client the commands make is this fakeredis; the URLs asked for are kept."""
    fake.urls = []

    def connect(settings, **_options):
        fake.urls.append(settings.redis_url)
        return fake

    monkeypatch.setattr(CommonSettings, "connect", connect)
    return fake


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def dead_letter(fake, stream: str = "events", body: str = "1") -> str:
    fields = {"channel": "m", "body": body, "reason": "r", "original_id": "1-1", "consumer": "c"}
    return fake.xadd(f"{stream}:dead", fields)


# -- shape --------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_commands_in_order(flag):
    code, out, _ = run(flag)
    assert code == 0
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == ORDER
    assert "Durable real-time push for Flask apps." in out


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["dev", "-h"], ["--host HOST", "--port PORT", "--user USER", "(default: demo)"]),
        (["web", "-h"], ["--host HOST", "--port PORT", "(default 127.0.0.1)"]),
        (["bridge", "-h"], ["--consumer CONSUMER", "--group GROUP", "--check"]),
        (["publish", "-h"], ["[CHANNEL] [BODY]", "--room ROOM", "--namespace", "--stdin"]),
        (["user", "add", "-h"], ["NAME", "--password-stdin", "--publish ROOM", "--no-broadcast"]),
        (["status", "-h"], ["--json"]),
        (["dead", "list", "-h"], ["--count COUNT", "--json"]),
        (["dead", "requeue", "-h"], ["[IDS]...", "--all"]),
    ],
)
def test_subcommand_help(argv, shown):
    code, out, _ = run(*argv)
    assert code == 0
    for text in shown:
        assert text in out, text


@pytest.mark.parametrize(
    "argv",
    [[], ["nope"], ["status", "--nope"], ["dead"], ["dead", "list", "--count", "0"], ["user"]],
)
def test_usage_errors_exit_2(argv):
    code, out, err = run(*argv)
    assert code == 2
    assert "Usage:" in out + err


def test_a_bad_setting_is_named_and_exits_2(monkeypatch):
    monkeypatch.setenv("STREAMBRIDGE_MAXLEN", "0")
    code, _, err = run("dead", "list")
    assert code == 2
    assert err.startswith("error: STREAMBRIDGE_MAXLEN: ")


def test_help_needs_no_valid_settings(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "amqp://nowhere/")
    assert run("status", "--help")[0] == 0


# -- lazy imports -------------------------------------------------------------------------


def _python(code: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_web_patches_before_click_threading_or_sockets_are_imported():
    seen = _python(
        """
import json, sys
import streambridge.async_mode as async_mode
def prepare():
    loaded = [m for m in ("click", "threading", "socket", "pydantic") if m in sys.modules]
    print(json.dumps(loaded))
    raise SystemExit(0)
async_mode.prepare = prepare
from streambridge.cli import main
main(["web", "--port", "0"])
"""
    )
    assert seen == []


@pytest.mark.parametrize(
    "argv",
    [["publish", "--stdin"], ["status"], ["dead", "list"]],
    ids=lambda argv: argv[0],
)
def test_redis_commands_need_only_the_base_install(argv):
    """No web tier, no metrics, no progress bar: those are extras."""
    seen = _python(
        f"""
import io, json, sys
for name in ("flask", "flask_socketio", "eventlet", "socketio", "prometheus_client", "tqdm"):
    sys.modules[name] = None  # importing it raises ImportError
sys.stdin = io.StringIO(json.dumps({{"channel": "m", "body": 1}}) + "\\n")
err = sys.stderr = io.StringIO()
from streambridge.cli import main
code = main({argv!r})
print(json.dumps({{"code": code, "err": err.getvalue()}}), file=sys.__stdout__)
""",
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
    )
    assert seen["code"] == 1
    assert seen["err"].startswith("error: cannot reach Redis"), seen["err"]


# -- commands (fakeredis) -----------------------------------------------------------------


def test_publish_prints_the_id_and_configures_logging(redis, configured):
    code, out, _ = run("publish", "message", '{"n": 1}', "--room", "user:bob")
    assert code == 0
    [(stream_id, fields)] = redis.xrange("events")
    assert out.strip() == stream_id
    assert fields == {"channel": "message", "body": '{"n": 1}', "room": "user:bob"}
    assert configured == [("INFO", "auto")]


def test_publish_refusals_exit_2(redis):
    assert run("publish", "message")[0] == 2
    assert run("publish", "bad channel!", "1")[0] == 2
    assert run("publish", "--stdin", "message")[0] == 2
    assert not redis.exists("events")


def test_publish_stdin(redis, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"channel": "m", "body": 1}\nbad\n'))
    code, out, err = run("publish", "--stdin")
    assert code == 1
    assert out.split() == [i for i, _ in redis.xrange("events")]
    assert "line 2: not JSON" in err


def test_status_and_dead_letters(redis):
    redis.xadd("events", {"channel": "m", "body": "1"})
    dead_id = dead_letter(redis)
    code, out, _ = run("status", "--json")
    assert code == 0
    assert (json.loads(out)["length"], json.loads(out)["dead_letters"]) == (1, 1)
    code, out, _ = run("status")
    assert code == 0 and "dead letters  1" in out
    code, out, _ = run("dead", "list", "--json")
    assert [d["id"] for d in json.loads(out)] == [dead_id]
    code, out, _ = run("dead", "list")
    assert code == 0 and f"{dead_id}  (was 1-1)  r" in out
    code, out, err = run("dead", "requeue", dead_id)
    assert code == 0
    assert out.split()[:2] == [dead_id, "->"] and "requeued 1" in err
    assert redis.xlen("events:dead") == 0


def test_dead_requeue_exit_statuses(redis):
    dead_id = dead_letter(redis)
    assert run("dead", "requeue")[0] == 2
    assert run("dead", "requeue", "--all", dead_id)[0] == 2
    code, _, err = run("dead", "requeue", "not-an-id")
    assert code == 2 and err.startswith("error:")
    code, _, err = run("dead", "requeue", dead_id, "1-1")
    assert code == 1 and "no dead letter 1-1" in err
    assert redis.xlen("events:dead") == 1


def test_bridge_options_reach_the_role(monkeypatch, configured):
    from streambridge.bridge import cli as bridge_cli

    got = []
    monkeypatch.setattr(bridge_cli, "run", lambda args, settings: got.append(args) or 1)
    assert run("bridge", "--check", "--consumer", "b1")[0] == 1
    assert vars(got[0]) == {"consumer": "b1", "group": None, "check": True}


def test_ctrl_c_exits_130(monkeypatch, configured):
    def interrupted(args, settings):
        raise KeyboardInterrupt

    monkeypatch.setattr("streambridge.bridge.cli.run", interrupted)
    assert run("bridge")[0] == 130


def test_user_add_and_list(tmp_path, monkeypatch, configured):
    monkeypatch.setenv("STREAMBRIDGE_USERS_FILE", str(tmp_path / "users.json"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password\n"))
    code, out, _ = run("user", "add", "dave", "--password-stdin", "--room", "team:red",
                       "--publish", "team:red", "--no-broadcast")  # fmt: skip
    assert code == 0 and "user dave saved in" in out
    from streambridge.webapp.app.users import UserStore

    dave = UserStore(tmp_path / "users.json").get("dave")
    assert (dave.rooms, dave.publish, dave.broadcast) == (("team:red",), ("team:red",), False)
    assert not dave.admin
    assert run("user", "list")[1].split() == ["dave"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password\n"))
    assert run("user", "add", "ops", "--password-stdin", "--admin")[0] == 0
    assert UserStore(tmp_path / "users.json").get("ops").admin


# -- the progress bar is optional ---------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_when_tqdm_is_installed():
    tqdm = pytest.importorskip("tqdm")
    bar = producer_cli._progress(Terminal())
    assert isinstance(bar, tqdm.tqdm)
    bar.close()


def test_no_progress_bar_without_tqdm(monkeypatch, fake, producer_settings):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    bar = producer_cli._progress(Terminal())
    bar.update(3)
    bar.close()
    errors = Terminal()
    publisher = producer_cli.Publisher(fake, producer_settings)
    lines = io.StringIO('{"channel": "m", "body": 1}\n')
    assert producer_cli.publish_lines(publisher, lines, io.StringIO(), errors) == 0
    assert errors.getvalue() == "published 1 event(s), 0 bad line(s)\n"


def test_no_progress_bar_off_a_terminal(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    producer_cli._progress(io.StringIO()).close()


# -- flask streambridge -------------------------------------------------------------------


def host_app(settings: WebSettings | None) -> Flask:
    """An app whose extension state holds ``settings`` (all the commands read of it)."""
    app = Flask(__name__)
    if settings is not None:
        app.extensions["streambridge"] = SimpleNamespace(settings=settings)
    return app


def test_flask_commands_are_the_same_command_objects():
    for name in ("status", "dead", "publish"):
        assert commands.flask_commands.commands[name] is commands.streambridge.commands[name]
    assert list(commands.flask_commands.commands) == ["status", "dead", "publish"]


def test_flask_commands_use_the_extension_settings(redis, configured):
    settings = WebSettings(redis_url="redis://app-redis:6380/2", stream="app-events")
    app = host_app(settings)
    runner = app.test_cli_runner()
    result = runner.invoke(commands.flask_commands, ["publish", "m", '"hi"'])
    assert result.exit_code == 0, result.output
    [(stream_id, _)] = redis.xrange("app-events")
    assert result.stdout.strip() == stream_id
    dead_id = dead_letter(redis, "app-events")
    result = runner.invoke(commands.flask_commands, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stream"] == "app-events"
    result = runner.invoke(commands.flask_commands, ["dead", "requeue", dead_id])
    assert result.exit_code == 0, result.output
    assert redis.xlen("app-events") == 2
    assert set(redis.urls) == {"redis://app-redis:6380/2"}
    assert configured == []  # the host app's logging is its own


def test_flask_commands_without_the_extension_read_the_environment(redis, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://env-redis:6379/0")
    monkeypatch.setenv("STREAMBRIDGE_STREAM", "env-events")
    runner = host_app(None).test_cli_runner()
    result = runner.invoke(commands.flask_commands, ["publish", "m", "1"])
    assert result.exit_code == 0, result.output
    assert redis.xlen("env-events") == 1
    assert redis.urls == ["redis://env-redis:6379/0"]


def test_flask_commands_keep_their_exit_statuses(redis):
    runner = host_app(WebSettings()).test_cli_runner()
    assert runner.invoke(commands.flask_commands, ["dead", "requeue"]).exit_code == 2
    assert runner.invoke(commands.flask_commands, ["dead", "requeue", "1-1"]).exit_code == 1
    result = runner.invoke(commands.flask_commands, ["publish", "m", "not json"])
    assert result.exit_code == 2
    assert "BODY is not JSON" in result.stderr
    assert runner.invoke(commands.flask_commands, ["nope"]).exit_code == 2
