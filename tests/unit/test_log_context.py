"""Bound context of a stdlib logger (a bridge's consumer and stream): merged with each
call's extra."""

from __future__ import annotations

import logging

from streambridge.log_context import Bound


def test_bound_keys_and_the_calls_own_reach_the_record(caplog):
    log = Bound(logging.getLogger("test.bound"), {"consumer": "c1", "stream": "events"})
    with caplog.at_level(logging.INFO, logger="test.bound"):
        log.info("bridge.ready", extra={"epoch": "e1", "stream": "events:1"})
        log.warning("bridge.plain")
    ready, plain = caplog.records
    assert (ready.getMessage(), ready.consumer, ready.stream, ready.epoch) == (
        "bridge.ready",
        "c1",
        "events:1",
        "e1",
    )
    assert (plain.consumer, plain.stream) == ("c1", "events")
