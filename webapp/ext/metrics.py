"""The web app's Prometheus metrics, served on ``STREAMBRIDGE_METRICS_PORT`` (not the app's
port: they are for operators)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WebMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge(
            "streambridge_web_connected_clients", "Socket.IO clients connected now.", registry=r
        )
        self.replayed = Counter(
            "streambridge_web_replayed_events", "Events replayed to clients on catch-up.",
            registry=r,
        )  # fmt: skip
        self.recoveries = Counter(
            "streambridge_web_recoveries",
            "Catch-ups, by whether the client's history was complete.",
            ["recovered"],
            registry=r,
        )
        self.shed = Counter(
            "streambridge_web_shed_clients", "Clients disconnected for falling behind.",
            registry=r,
        )  # fmt: skip
        self.api_requests = Counter(
            "streambridge_web_api_requests", "/api/ requests, by status.", ["status"],
            registry=r,
        )  # fmt: skip
        self.refused_connections = Counter(
            "streambridge_web_refused_connections",
            "Connections refused or cut by the per-address caps and deadlines, by reason.",
            ["reason"],
            registry=r,
        )
        self.presence_scripts = Counter(
            "streambridge_web_presence_scripts",
            "Presence scripts run in Redis, by kind (join, leave, heartbeat, read).",
            ["kind"],
            registry=r,
        )
        self.presence_round_trips = Counter(
            "streambridge_web_presence_round_trips",
            "Pipelines of presence scripts sent to Redis.",
            registry=r,
        )
