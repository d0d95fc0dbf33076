from __future__ import annotations

import functools
import json
import shutil
from unittest import mock

import pytest
from streambridge.webapp.app import users as users_module
from streambridge.webapp.app.users import UserStore
from werkzeug.security import generate_password_hash

from streambridge.embedded_redis import RedisServer
from tests.support import PASSWORDS, REPORTS, Bridge, Proc, Web, clean_env


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def users_template(tmp_path_factory):
    # Hashing a password takes a fifth of a second: hash once, copy per test. So does
    # checking one, which a web server does at every login (hundreds in a run): these
    # users get a cheap hash, as the storm test's do (what a hash costs is not what the
    # tests are about; the server checks any werkzeug hash the same way). Users a test
    # adds itself, and unknown names (checked against the server's own dummy hash), keep
    # the default.
    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1000")
    path = tmp_path_factory.mktemp("users") / "users.json"
    store = UserStore(path)
    with mock.patch.object(users_module, "generate_password_hash", cheap):
        store.add("alice", PASSWORDS["alice"], subscribe=["team:*", "order:1*"])
        store.add("bob", PASSWORDS["bob"])
        store.add("carol", PASSWORDS["carol"], rooms=["team:blue"])
    assert all(h.startswith("pbkdf2:sha256:1000$") for h in _hashes(path))
    return path


def _hashes(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [v if isinstance(v, str) else v["password"] for v in raw.values()]


@pytest.fixture
def users_file(tmp_path, users_template):
    path = tmp_path / "users.json"
    shutil.copy2(users_template, path)  # keeps its 0600 mode
    return path


@pytest.fixture
def env(redis_server, redis_client, users_file):
    return clean_env(
        REDIS_URL=redis_server.url,
        STREAMBRIDGE_USERS_FILE=str(users_file),
        STREAMBRIDGE_SECRET_KEY="x" * 40,
        STREAMBRIDGE_CLAIM_IDLE_MS="2000",
        # Tests log in far more often than people; the limits have tests of their own.
        STREAMBRIDGE_LOGIN_RATE_LIMIT="10000 per minute",
    )


@pytest.fixture
def processes():
    """Every process a test starts is stopped at the end, even when it fails."""
    started = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
def web(env, tmp_path, processes, request):
    proc = Web(env, tmp_path)
    processes.append(proc)
    Proc.start(proc)
    if "bridge" in request.fixturenames:
        request.getfixturevalue("bridge")  # starting meanwhile: see below
    return proc.wait_ready()


STARTING: list[Bridge] = []
"""Bridges of the current test started by the fixture, not yet waited for."""


@pytest.fixture
def bridge(env, tmp_path, processes):
    # Its start-up (mostly imports) overlaps with the test's other fixtures, a web
    # server's above all (two processes, two cores); it is ready before the test runs.
    proc = Bridge(env, tmp_path)
    processes.append(proc)
    STARTING.append(proc.start(wait=False))
    return proc


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    STARTING.clear()  # of a test whose set-up failed


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    while STARTING:
        STARTING.pop(0).wait_ready()


@pytest.fixture
def clients():
    made = []
    yield made
    for client in made:
        client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A test's figures ride on its report, which reaches the main process when the
    # tests run in worker processes (pytest-xdist).
    report = (yield).get_result()
    report.user_properties.extend(("figure", line) for line in REPORTS)
    REPORTS.clear()


FIGURES: list[str] = []


def pytest_runtest_logreport(report):
    FIGURES.extend(value for name, value in report.user_properties if name == "figure")


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in FIGURES:
            terminalreporter.write_line(line)
