"""Append events to the stream from Python.

    from producers import publish
    publish("message", {"text": "hi"}, room="user:alice")

Each call validates against the event contract before XADD and trims the
stream approximately to ``STREAMBRIDGE_MAXLEN`` entries.
"""

from producers.publisher import Publisher, configure, emit_event, publish, publish_many
from streambridge.contract import ContractError, Event

__all__ = [
    "ContractError",
    "Event",
    "Publisher",
    "configure",
    "emit_event",
    "publish",
    "publish_many",
]
