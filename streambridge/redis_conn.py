"""The one place that turns a URL into a Redis client.

URLs:

* ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path``;
* ``redis+sentinel://[[user]:password@]host1:port1,host2:port2/db/service_name``
  (also ``rediss+sentinel://``): the master that the Sentinels name, followed across
  failovers; the same form python-socketio reads;
* ``redis+cluster://[[user]:password@]host1:port1,host2:port2`` (also
  ``rediss+cluster://``), or any ``redis://`` URL with ``cluster=True``: Redis Cluster.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel, SentinelConnectionPool

SOCKET_TIMEOUT_S = 10.0
"""Upper bound on any single command; blocking reads are shorter than this."""
KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


class LazyCluster:
    """A RedisCluster made on first use.

    RedisCluster reads the slot map from its nodes in its constructor; a process
    starting while the cluster is unreachable must back off and retry like on any
    other outage, not fail where the client is made.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._cluster: RedisCluster | None = None

    def cluster(self) -> RedisCluster:
        if self._cluster is None:
            try:
                self._cluster = RedisCluster(**self._options)
            except RedisClusterException as exc:
                raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc
        return self._cluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster(), name)


Client = redis.Redis | RedisCluster | LazyCluster

ERRORS = (redis.RedisError, RedisClusterException)
"""What a failing Redis raises: redis-py's cluster client raises RedisClusterException
(not a RedisError) when no node of the cluster answers."""


def field_dict(flat: Any) -> Any:
    """A stream entry's fields as a dict: Redis's flat name, value, ... list paired
    (a dict or None as it is)."""
    if type(flat) is list:
        pairs = iter(flat)
        return dict(zip(pairs, pairs, strict=False))
    return flat


def as_cluster(client: Any) -> RedisCluster | None:
    """The RedisCluster behind ``client``, or None if it is not a cluster client."""
    if isinstance(client, LazyCluster):
        return client.cluster()
    return client if isinstance(client, RedisCluster) else None


@dataclass(frozen=True)
class Target:
    """What a URL points at."""

    kind: str  # "single" | "sentinel" | "cluster"
    url: str  # for "single": the URL redis-py reads as it is
    hosts: list[tuple[str, int]] = field(default_factory=list)
    tls: bool = False
    db: int = 0
    service: str | None = None
    username: str | None = None
    password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # from the query string
    unix: bool = False  # a unix:// socket


def parse(url: str, *, cluster: bool = False) -> Target:
    """Check ``url`` and say what it points at; ValueError with the reason if it is bad."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES + CLUSTER_SCHEMES:
        allowed = ", ".join(s + "://" for s in SCHEMES + CLUSTER_SCHEMES)
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (use {allowed})")
    if scheme == "unix":
        if cluster:
            raise ValueError("a Redis Cluster cannot be reached over a unix:// socket")
        if not parts.path:
            raise ValueError("unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
        return Target("single", url, unix=True)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    tls = scheme.startswith("rediss")
    if scheme in ("redis", "rediss") and not cluster:
        return Target("single", url)
    default_port = 26379 if scheme.endswith("+sentinel") else 6379
    hosts = _hosts(parts.netloc.rpartition("@")[2], url, default_port)
    segments = [s for s in parts.path.split("/") if s]
    if scheme.endswith("+sentinel"):
        if cluster:
            raise ValueError("STREAMBRIDGE_CLUSTER is set but the URL names Sentinels")
        db = _db(segments[0] if segments else "0", url)
        service = segments[1] if len(segments) > 1 else None
        if not service:
            raise ValueError(
                f"Sentinel URL needs the service name: "
                f"redis+sentinel://host:26379,host2:26379/0/mymaster (got {redacted(url)})"
            )
        return Target("sentinel", url, hosts, tls, db, service, user, password, _query(parts))
    if segments and _db(segments[0], url) != 0:
        raise ValueError("Redis Cluster has only database 0")
    return Target("cluster", url, hosts, tls, 0, None, user, password, _query(parts))


def is_cluster_url(url: str, cluster: bool = False) -> bool:
    return parse(url, cluster=cluster).kind == "cluster"


def connect(
    url: str,
    *,
    cluster: bool = False,
    decode_responses: bool = True,
    pool_size: int | None = None,
    keepalive: bool = False,
    **options: Any,
) -> Client:
    """A client for ``url``; nothing is sent until first use.

    ``pool_size``: at most this many connections (per node on a cluster), callers
    wait for a free one (for servers where many green threads share one client).
    ``keepalive``: TCP keepalive, so that a peer that vanished without closing the
    connection (power loss, partition) is noticed in about 25 s, also by a client
    that waits without a timeout (unix sockets need none).
    """
    target = parse(url, cluster=cluster)
    options = {**target.options, **options}
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    options.setdefault("health_check_interval", 30)
    options["decode_responses"] = decode_responses
    if keepalive and not target.unix:
        options.update(socket_keepalive=True, socket_keepalive_options=KEEPALIVE)
    if target.kind == "sentinel":
        return _sentinel_master(target, options, pool_size)
    if target.kind == "cluster":
        if pool_size is not None:
            options["connection_pool_class"] = redis.BlockingConnectionPool
            options["max_connections"] = pool_size
        return LazyCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.hosts],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            **options,
        )
    if pool_size is not None:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=SOCKET_TIMEOUT_S, **options
        )
        return redis.Redis(connection_pool=pool)
    return redis.Redis.from_url(url, **options)


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (follows the master) that waits for a free connection at its
    limit, like the pool one Redis gets with ``pool_size``."""


def _sentinel_auth(options: dict[str, Any]) -> dict[str, Any]:
    """Credentials of the Sentinels themselves (``?sentinel_username=&sentinel_password=``
    in the URL), taken out of the master's connection options."""
    return {
        key.removeprefix("sentinel_"): options.pop(key)
        for key in ("sentinel_username", "sentinel_password")
        if key in options
    }


def _sentinel_master(target: Target, options: dict[str, Any], pool_size: int | None) -> redis.Redis:
    # The Sentinels are asked where the master is on every (re)connect, and a
    # connection to a master that became a replica is dropped (READONLY): clients
    # follow a failover by themselves.
    sentinel_auth = _sentinel_auth(options)
    pool_options: dict[str, Any] = {}
    if pool_size is not None:
        pool_options = {
            "connection_pool_class": _BlockingSentinelPool,
            "max_connections": pool_size,
            "timeout": SOCKET_TIMEOUT_S,
        }
    sentinel = Sentinel(
        target.hosts,
        # Asking the Sentinels is always bounded, also for a listening client.
        sentinel_kwargs={
            "socket_connect_timeout": options["socket_connect_timeout"],
            "socket_timeout": options["socket_timeout"] or SOCKET_TIMEOUT_S,
            **sentinel_auth,
        },
        username=target.username,
        password=target.password,
        db=target.db,
        ssl=target.tls,
        **options,
    )
    assert target.service is not None
    return sentinel.master_for(target.service, **pool_options)


def limiter_storage(url: str, *, cluster: bool = False) -> tuple[str, dict[str, Any]]:
    """The same Redis as a ``limits`` storage URI and options (Flask-Limiter's own URL
    forms): TLS and credentials as options, Sentinels asked without the master's
    credentials (as streambridge's own clients do), never a password in the URI."""
    target = parse(url, cluster=cluster)
    if target.unix:
        return "redis+unix" + url[len("unix") :], {}
    if target.kind == "single":
        return url, {}
    hosts = ",".join(f"{h}:{p}" for h, p in target.hosts)
    options: dict[str, Any] = {**target.options, "ssl": target.tls}
    if target.username:
        options["username"] = target.username
    if target.password is not None:
        options["password"] = target.password
    if target.kind == "cluster":
        return f"redis+cluster://{hosts}", options
    options["db"] = target.db
    options["sentinel_kwargs"] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "username": None,
        "password": None,
        **_sentinel_auth(options),
    }
    return f"redis+sentinel://{hosts}/{target.service}", options


def redacted(url: str) -> str:
    """The URL with any password hidden, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _hosts(netloc: str, url: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(default_port)
        host = host.strip("[]")  # IPv6 literal
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad host:port {item!r} in {redacted(url)}")
        hosts.append((host, int(port)))
    return hosts


def _query(parts: SplitResult) -> dict[str, Any]:
    """Connection options from the query string (``?ssl_ca_certs=...``), read the way
    redis-py reads them for redis:// URLs."""
    if not parts.query:
        return {}
    options = parse_url(f"redis://localhost?{parts.query}")
    return {k: v for k, v in options.items() if k not in ("host", "port", "db")}


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad database number {text!r} in {redacted(url)}")
    return int(text)
