"""``streambridge bridge``: run the daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal

import structlog

from bridge.daemon import Bridge
from streambridge.settings import BridgeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consumer", help="consumer name (default: host-pid)")
    parser.add_argument("--group", help="consumer group (default: bridge)")


def run(args: argparse.Namespace, settings: BridgeSettings) -> int:
    overrides = {k: v for k, v in (("consumer", args.consumer), ("group", args.group)) if v}
    if overrides:
        settings = settings.model_copy(update=overrides)
    bridge = Bridge(settings)
    log = structlog.get_logger("bridge")

    def on_signal(signum: int, _frame: object) -> None:
        # Warm stop: finish the batch in hand, ack it, then exit.
        log.info("bridge.signal", signal=signal.Signals(signum).name)
        bridge.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge.run()
    return 0
