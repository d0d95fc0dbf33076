"""Settings from the environment: one class per process, shared prefix ``STREAMBRIDGE_``.

Nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streambridge import async_mode, defaults, keys, redis_conn

PREFIX = "STREAMBRIDGE_"


def _default_consumer() -> str:
    import socket  # here, not at import time: the web entry point patches sockets first

    # Stable across restarts: a restarted bridge finds its own pending entries at once.
    # Several bridges on one host need names of their own (the bridge refuses a name a
    # live bridge holds): STREAMBRIDGE_CONSUMER, e.g. %H-%i in a systemd template.
    return socket.gethostname()


def env_name(field: str) -> str:
    """The environment variable of a setting (as named in a validation error)."""
    name = field.upper()
    unprefixed = name in ("REDIS_URL", "NOTIFY_SOCKET") or name.startswith(PREFIX)
    return name if unprefixed else PREFIX + name


class CommonSettings(BaseSettings):
    """What every process needs: where Redis is, key names, limits, logging."""

    # hide_input_in_errors: an error about REDIS_URL must not print its password.
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    redis_url: str = Field(
        defaults.REDIS_URL,
        validation_alias=AliasChoices("REDIS_URL", "STREAMBRIDGE_REDIS_URL"),
        description="Redis URL: redis://, rediss://, unix://, redis+sentinel://, redis+cluster://.",
    )
    cluster: bool = Field(False, description="The URL is one node of a Redis Cluster.")
    shards: int = Field(
        1, ge=1, le=defaults.MAX_SHARDS, description="Stream keys events are spread over (by room)."
    )
    queue_pubsub: Literal["auto", "classic", "sharded"] = Field(
        "auto",
        description="Queue pub/sub: sharded (SPUBLISH) or classic; auto: sharded on a cluster.",
    )
    stream: str = Field(defaults.STREAM, min_length=1, description="Stream key.")
    queue_channel: str = Field(
        defaults.QUEUE_CHANNEL, min_length=1, description="Socket.IO queue pub/sub channel."
    )
    maxlen: int = Field(defaults.MAXLEN, ge=1, description="Approximate stream length kept.")
    history_size: int = Field(
        defaults.HISTORY_SIZE, ge=1, description="Events kept per room for catch-up."
    )
    history_ttl_s: int = Field(
        defaults.HISTORY_TTL_S,
        ge=1,
        description="A room's history is dropped this long (up to 9/8 of it) after its last event.",
    )
    idempotency_window_s: int = Field(
        defaults.IDEMPOTENCY_WINDOW_S,
        ge=1,
        description="Events with the same idempotency_key in one room within this time are "
        "delivered once.",
    )
    max_body_bytes: int = Field(defaults.MAX_BODY_BYTES, ge=1, description="Body size limit.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON otherwise."
    )

    @field_validator("redis_url")
    @classmethod
    def _known_url(cls, value: str) -> str:
        redis_conn.parse(value)
        return value

    @model_validator(mode="after")
    def _url_fits_cluster(self) -> Self:
        redis_conn.parse(self.redis_url, cluster=self.cluster)
        return self

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> Self:
        """Settings from a Flask ``app.config`` (``STREAMBRIDGE_<NAME>`` keys and
        ``REDIS_URL``), then keyword overrides; the environment fills the rest."""
        values = {
            name: config[PREFIX + name.upper()]
            for name in cls.model_fields
            if PREFIX + name.upper() in config
        }
        if "redis_url" not in values and "REDIS_URL" in config:
            values["redis_url"] = config["REDIS_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def is_cluster(self) -> bool:
        return redis_conn.is_cluster_url(self.redis_url, self.cluster)

    @property
    def sharded_pubsub(self) -> bool:
        """SPUBLISH/SSUBSCRIBE for the queue (the bridge and every web server agree)."""
        if self.queue_pubsub == "auto":
            return self.is_cluster
        return self.queue_pubsub == "sharded"

    @property
    def stream_channels(self) -> list[str]:
        """Where each shard's events are published: the queue channel, or with sharded
        pub/sub a channel in each shard's slot (the publish script runs in that slot)."""
        if not self.sharded_pubsub:
            return [self.queue_channel] * self.shards
        return [keys.stream_channel(self.queue_channel, s) for s in self.stream_keys]

    @property
    def stream_keys(self) -> list[str]:
        return keys.shards(self.stream, self.shards)

    def for_shard(self, shard: int) -> Self:
        """These settings narrowed to one shard's stream (whose own keys follow it)."""
        stream = keys.shard(self.stream, shard, self.shards)
        return self.model_copy(update={"stream": stream, "shards": 1})

    def shard_settings(self) -> list[Self]:
        """``for_shard`` of every shard, in shard order."""
        return [self.for_shard(i) for i in range(self.shards)]

    def connect(self, **options: Any) -> redis_conn.Client:
        """A client for this Redis (single, Sentinel or Cluster)."""
        return redis_conn.connect(self.redis_url, cluster=self.cluster, **options)

    @property
    def dead_stream(self) -> str:
        return keys.dead(self.stream)

    @property
    def epoch_key(self) -> str:
        return keys.epoch(self.stream)

    @property
    def history_clock_key(self) -> str:
        return keys.history_clock(self.stream)


class MetricsSettings(BaseSettings):
    """Where a long-running process serves its Prometheus metrics: a port of its own,
    on the loopback address by default, never the public one of the web app."""

    model_config = CommonSettings.model_config

    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus metrics on this port."
    )
    metrics_host: str = Field("127.0.0.1", description="Address of the metrics server.")


class ProducerSettings(CommonSettings):
    """Settings of ``publish()`` and ``streambridge publish``."""


class BridgeSettings(CommonSettings, MetricsSettings):
    """Settings of ``streambridge bridge``."""

    group: str = Field(defaults.GROUP, min_length=1, description="Consumer group name.")
    consumer: str = Field(
        default_factory=_default_consumer, min_length=1, description="Consumer name."
    )
    batch_size: int = Field(defaults.BATCH_SIZE, ge=1, le=10_000)
    block_ms: int = Field(defaults.BLOCK_MS, ge=1, le=60_000)
    claim_idle_ms: int = Field(defaults.CLAIM_IDLE_MS, ge=1)
    max_deliveries: int = Field(defaults.MAX_DELIVERIES, ge=1)
    dead_maxlen: int = Field(defaults.DEAD_MAXLEN, ge=1)
    backoff_min_s: float = Field(defaults.BACKOFF_MIN_S, gt=0)
    backoff_max_s: float = Field(defaults.BACKOFF_MAX_S, gt=0)
    notify_socket: str | None = Field(
        None,
        validation_alias=AliasChoices("NOTIFY_SOCKET"),
        description="systemd's notification socket (set by systemd for Type=notify).",
    )

    @property
    def alive_key(self) -> str:
        return keys.alive(self.stream, self.group, self.consumer)


class WebSettings(CommonSettings, MetricsSettings):
    """Settings of ``streambridge web``."""

    secret_key: SecretStr | None = Field(None, description="Flask secret key.")
    dev: bool = Field(False, description="Development mode: allows a generated secret key.")
    users_file: str = Field(defaults.USERS_FILE, description="JSON of name -> password hash.")
    host: str = Field(defaults.HOST)
    port: int = Field(defaults.PORT, ge=0, le=65535)
    socketio_path: str = Field(defaults.SOCKETIO_PATH)
    client_script_url: str = Field(
        defaults.CLIENT_SCRIPT_URL, description="Where the browser client script is served."
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra origins allowed to open sockets (default: same origin only).",
    )
    async_mode: Literal["gevent", "eventlet", "threading"] = Field(async_mode.DEFAULT)
    replay_limit: int = Field(
        defaults.REPLAY_LIMIT, ge=0, description="Most of a client's own missed events replayed."
    )
    replay_page: int = Field(defaults.REPLAY_PAGE, ge=1)
    max_request_bytes: int = Field(defaults.MAX_REQUEST_BYTES, ge=1024)
    max_client_queue: int = Field(
        defaults.MAX_CLIENT_QUEUE,
        ge=10,
        description="Packets queued for one client before it is shed (and later caught up).",
    )
    ping_interval_s: float = Field(
        defaults.PING_INTERVAL_S,
        gt=0,
        description="Engine.IO pings to each client this often (a dead client is noticed "
        "within this plus 20 s).",
    )
    max_subscriptions: int = Field(
        defaults.MAX_SUBSCRIPTIONS,
        ge=0,
        description="Rooms one connection may subscribe to on request (0: none).",
    )
    subscribe_rate: float = Field(
        defaults.SUBSCRIBE_RATE,
        gt=0,
        description="Subscribe/unsubscribe requests per second per connection, after a "
        "burst of STREAMBRIDGE_SUBSCRIBE_BURST.",
    )
    subscribe_burst: int = Field(
        defaults.SUBSCRIBE_BURST, ge=1, description="Requests one connection may make at once."
    )
    history_api_limit: int = Field(
        defaults.HISTORY_API_LIMIT,
        ge=1,
        le=10_000,
        description="Most events one history request (GET /api/history) returns.",
    )
    presence: bool = Field(
        True,
        description="Keep who is connected to the granted and subscribed rooms (presence).",
    )
    presence_ttl_s: float = Field(
        defaults.PRESENCE_TTL_S,
        ge=0.3,
        le=300,
        description="Presence heartbeat every third of this; a dead server's connections "
        "leave within this plus a third.",
    )
    dashboard_path: str = Field(
        defaults.DASHBOARD_PATH,
        description="Where the operator dashboard is served (admins only; empty: off).",
    )
    dashboard_sample_s: float = Field(
        defaults.DASHBOARD_SAMPLE_S,
        ge=0.5,
        le=60,
        description="How often each web server samples the dashboard's charts.",
    )
    authorize_timeout_s: float = Field(
        defaults.AUTHORIZE_TIMEOUT_S,
        gt=0,
        description="A room authorization hook not answering within this time says no.",
    )
    redis_pool_size: int = Field(
        defaults.REDIS_POOL_SIZE, ge=1, description="Redis connections one web server uses."
    )
    max_connections: int = Field(
        defaults.MAX_CONNECTIONS, ge=1, description="Concurrent connections per web server."
    )
    websocket_compression: bool = Field(
        False, description="permessage-deflate on WebSocket connections."
    )
    session_lifetime_s: int = Field(
        12 * 3600, ge=60, description="A login lasts this long; its sockets close then."
    )
    trusted_proxies: int = Field(
        0, ge=0, le=5, description="Reverse proxies in front whose X-Forwarded-* to trust."
    )
    login_rate_limit: str = Field(
        "10 per minute", description="POST /login per client address (empty: no limit)."
    )
    api_rate_limit: str = Field(
        "300 per minute", description="POST /api/ per user (empty: no limit)."
    )
    api_broadcast: bool = Field(
        True, description="Users may publish to everyone through POST /api/."
    )
    queue_ready_timeout_s: float = Field(
        10.0, gt=0, description="How long start-up waits for the queue subscription."
    )
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="After SIGTERM, connections still open this long are cut."
    )
    max_connections_per_address: int = Field(
        defaults.MAX_CONNECTIONS_PER_ADDRESS,
        ge=0,
        description="Open connections from one client address (0: no cap; not applied "
        "behind trusted proxies, whose one address every client shares).",
    )
    max_unfinished_per_address: int = Field(
        defaults.MAX_UNFINISHED_PER_ADDRESS,
        ge=0,
        description="Requests from one address whose head is still arriving (0: no cap; "
        "not applied behind trusted proxies).",
    )
    request_timeout_s: float | None = Field(
        None,
        gt=0,
        description="A request must be answered within this time (default: the Socket.IO "
        "ping window plus 15 s); a completed WebSocket handshake lifts it.",
    )
    connect_timeout_s: float = Field(
        defaults.CONNECT_TIMEOUT_S,
        gt=0,
        description="An Engine.IO session must connect to Socket.IO within this time.",
    )
    request_head_timeout_s: float = Field(
        defaults.REQUEST_HEAD_TIMEOUT_S,
        gt=0,
        description="A request's line and headers must arrive within this time.",
    )

    def per_address_cap(self, cap: int) -> int | None:
        """A per-address cap as applied: None (no cap) when 0 or behind a proxy."""
        return None if cap == 0 or self.trusted_proxies else cap

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().rstrip("/") for v in value.split(",") if v.strip()]
        return value

    @field_validator("dashboard_path")
    @classmethod
    def _path_or_off(cls, value: str) -> str:
        return value if value == "" else cls._leading_slash(value)

    @field_validator("socketio_path", "client_script_url")
    @classmethod
    def _leading_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value.rstrip("/") or "/"
