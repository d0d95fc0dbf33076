"""Fixtures for the fast unit tests: fakeredis only, never a real server or process."""

from __future__ import annotations

import os

import fakeredis
import pytest

from streambridge.settings import ProducerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Settings read the environment; unit tests must not see the developer's."""
    for name in list(os.environ):
        if name.startswith("STREAMBRIDGE_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def fake():
    """A Redis client on a server of its own (no state shared between tests)."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def producer_settings():
    return ProducerSettings(redis_url="redis://unused.invalid:1/0")
