"""The one place that turns a URL into a Redis client."""

from __future__ import annotations

import redis

SOCKET_TIMEOUT_S = 10.0
"""Upper bound on any single command; blocking reads are shorter than this."""


def connect(
    url: str,
    *,
    decode_responses: bool = True,
    pool_size: int | None = None,
    **options: object,
) -> redis.Redis:
    """A client for ``url``; nothing is sent until first use.

    ``pool_size``: at most this many connections, callers wait for a free one (for
    servers where many green threads share one client).
    """
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    options.setdefault("health_check_interval", 30)
    if pool_size is not None:
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=SOCKET_TIMEOUT_S,
            decode_responses=decode_responses,
            **options,
        )
        return redis.Redis(connection_pool=pool)
    return redis.Redis.from_url(url, decode_responses=decode_responses, **options)


def redacted(url: str) -> str:
    """The URL with any password hidden, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
