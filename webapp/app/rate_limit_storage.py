"""A rate-limit storage made on first use.

limits' Redis Cluster storage reads the cluster's slot map in its constructor; a web
server starting while the cluster is unreachable must come up and serve once it is
back, as with every other outage, not fail at start.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import redis
from limits.storage import Storage, storage_from_string
from redis.exceptions import RedisClusterException

from streambridge.redis_conn import ERRORS

SCHEME = "streambridge+lazy"


class LazyStorage(Storage):
    STORAGE_SCHEME: ClassVar[list[str]] = [SCHEME]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        target_uri: str,
        **options: Any,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self._target_uri = target_uri
        self._options = options
        self._storage: Storage | None = None
        self._lock = threading.Lock()

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return ERRORS

    def _real(self) -> Storage:
        with self._lock:
            if self._storage is None:
                try:
                    self._storage = storage_from_string(self._target_uri, **self._options)
                except RedisClusterException:
                    # Not the original message: it may carry connection details.
                    raise redis.ConnectionError("rate-limit storage unreachable") from None
            return self._storage

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._real().incr(key, expiry, amount)

    def get(self, key: str) -> int:
        return self._real().get(key)

    def get_expiry(self, key: str) -> float:
        return self._real().get_expiry(key)

    def check(self) -> bool:
        try:
            return self._real().check()
        except ERRORS:
            return False

    def reset(self) -> int | None:
        return self._real().reset()

    def clear(self, key: str) -> None:
        self._real().clear(key)
