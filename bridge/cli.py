"""``streambridge bridge``: run the daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from streambridge.bridge.daemon import ShardedBridge
from streambridge.bridge.metrics import BridgeMetrics

from streambridge import metrics_http
from streambridge.sd_notify import notify
from streambridge.settings import BridgeSettings

log = logging.getLogger(__name__)


def run(args: Any, settings: BridgeSettings) -> int:
    """``args``: the command's options (``consumer``, ``group``, ``check``)."""
    overrides = {k: v for k, v in (("consumer", args.consumer), ("group", args.group)) if v}
    if overrides:
        settings = settings.model_copy(update=overrides)
    if args.check:
        return check(settings)
    metrics = BridgeMetrics()
    metrics_http.serve(settings, metrics.registry)
    bridge = ShardedBridge(settings, metrics=metrics)

    def on_signal(signum: int, _frame: object) -> None:
        # Warm stop: finish the batch in hand, ack it, then exit.
        log.info("bridge.signal", extra={"signal": signal.Signals(signum).name})
        bridge.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge.on_ready = lambda: notify(settings.notify_socket, "READY=1")
    bridge.run()
    notify(settings.notify_socket, "STOPPING=1")
    if bridge.refused is not None:
        print(f"error: {bridge.refused}", file=sys.stderr)
        return 2
    return 0


def check(settings: BridgeSettings) -> int:
    from streambridge.redis_conn import ERRORS

    shards = settings.shard_settings()
    try:
        client = settings.connect()
        dead = [s.alive_key for s in shards if not client.exists(s.alive_key)]
    except ERRORS as exc:
        print(f"not alive: cannot reach Redis: {exc}")
        return 1
    print(f"not alive: {', '.join(dead)} expired" if dead else "alive")
    return 1 if dead else 0
