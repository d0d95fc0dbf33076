"""The web side of the Socket.IO message queue.

python-socketio's RedisManager, plus: a ``subscribed`` flag, so the server can
wait for its subscription before it answers anything, and a short, capped
reconnect back-off.
"""

from __future__ import annotations

import time

import socketio
import structlog

log = structlog.get_logger(__name__)

RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0


class StreamQueueManager(socketio.RedisManager):
    name = "streambridge-redis"

    def __init__(self, url: str, channel: str, **kwargs) -> None:
        super().__init__(url, channel=channel, **kwargs)
        import threading  # green under eventlet: the web entry point patched it first

        self.subscribed = threading.Event()

    def wait_subscribed(self, timeout: float) -> bool:
        return self.subscribed.wait(timeout)

    def _redis_listen_with_retries(self):
        retry = RETRY_MIN_S
        connected = False
        while True:
            try:
                if not connected:
                    self._redis_connect()
                    self.pubsub.subscribe(self.channel)
                    # The subscription is in place once Redis answers it.
                    self.pubsub.ping()
                    connected = True
                    retry = RETRY_MIN_S
                    self.subscribed.set()
                    log.info("queue.subscribed", channel=self.channel)
                yield from self.pubsub.listen()
            except Exception as exc:
                connected = False
                self.subscribed.clear()
                log.warning("queue.disconnected", error=str(exc), retry_in_s=retry)
                time.sleep(retry)
                retry = min(RETRY_MAX_S, retry * 2)
