"""streambridge: durable real-time push for Flask apps.

    from streambridge import publish, publish_many, Event   # producers (redis + pydantic)
    from streambridge import StreamBridge, run_app          # the Flask extension ([web])

The names are imported on first use, never here: a web process must let eventlet or
gevent monkey-patch before anything imports sockets, and a producer must not pay for
(or need) the web tier.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ContractError": "streambridge.contract",
    "Event": "streambridge.contract",
    "Publisher": "streambridge.publisher",
    "configure": "streambridge.publisher",
    "emit_event": "streambridge.publisher",
    "publish": "streambridge.publisher",
    "publish_many": "streambridge.publisher",
    "StreamBridge": "streambridge.webapp.ext.extension",
    "PublishRefused": "streambridge.webapp.ext.extension",
    "PresenceUnavailable": "streambridge.webapp.ext.presence_keeper",
    "run_app": "streambridge.webapp.ext.server",
}
__all__ = [
    "ContractError",
    "Event",
    "PresenceUnavailable",
    "PublishRefused",
    "Publisher",
    "StreamBridge",
    "configure",
    "emit_event",
    "publish",
    "publish_many",
    "run_app",
]

if TYPE_CHECKING:
    from streambridge.contract import ContractError, Event
    from streambridge.publisher import Publisher, configure, emit_event, publish, publish_many
    from streambridge.webapp.ext.extension import PublishRefused, StreamBridge
    from streambridge.webapp.ext.presence_keeper import PresenceUnavailable
    from streambridge.webapp.ext.server import run_app


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streambridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
