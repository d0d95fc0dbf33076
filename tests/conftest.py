from __future__ import annotations

import shutil

import pytest
from streambridge.webapp.app.users import UserStore

from streambridge.embedded_redis import RedisServer
from tests.support import PASSWORDS, REPORTS, Bridge, Web, clean_env


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
    # Hashing a password takes a fifth of a second: hash once, copy per test.
    path = tmp_path_factory.mktemp("users") / "users.json"
    store = UserStore(path)
    store.add("alice", PASSWORDS["alice"], subscribe=["team:*", "order:1*"])
    store.add("bob", PASSWORDS["bob"])
    store.add("carol", PASSWORDS["carol"], rooms=["team:blue"])
    return path


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
def web(env, tmp_path, processes):
    proc = Web(env, tmp_path)
    processes.append(proc)
    return proc.start()


@pytest.fixture
def bridge(env, tmp_path, processes):
    proc = Bridge(env, tmp_path)
    processes.append(proc)
    return proc.start()


@pytest.fixture
def clients():
    made = []
    yield made
    for client in made:
        client.close()


def pytest_terminal_summary(terminalreporter):
    if REPORTS:
        terminalreporter.section("figures measured by the tests")
        for line in REPORTS:
            terminalreporter.write_line(line)
