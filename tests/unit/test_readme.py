"""The README's settings table names every setting there is."""

from __future__ import annotations

from pathlib import Path

import pytest

from streambridge.settings import PREFIX, BridgeSettings, ProducerSettings, WebSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
ALIASED = {"redis_url": "REDIS_URL", "notify_socket": "NOTIFY_SOCKET"}


@pytest.mark.parametrize("cls", [ProducerSettings, BridgeSettings, WebSettings])
def test_every_setting_is_documented(cls):
    missing = [
        name
        for name in cls.model_fields
        if f"`{ALIASED.get(name, PREFIX + name.upper())}`" not in README
    ]
    assert missing == []
